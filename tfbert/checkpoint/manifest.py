"""SHA256SUMS manifests: written next to everything tfbert saves, checked when loading.

The format is ``sha256sum``'s (``<hex>  <relative path>`` per line), so
``sha256sum -c SHA256SUMS`` verifies a directory without tfbert.
"""

from __future__ import annotations

import hashlib
import os
import re

from tfbert.checkpoint.files import MANIFEST_NAME

_LINE = re.compile(r"^([0-9a-f]{64}) [ *](.+)$")


def sha256_file(path: str, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(root: str, exclude: tuple[str, ...] = ()) -> str:
    """Hash every file under ``root`` into ``root/SHA256SUMS``; returns its path."""
    lines = []
    for dirpath, _, names in os.walk(root):
        for name in sorted(names):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root).replace(os.sep, "/")
            if rel == MANIFEST_NAME or rel in exclude:
                continue
            lines.append(f"{sha256_file(path)}  {rel}")
    target = os.path.join(root, MANIFEST_NAME)
    with open(target, "w", encoding="utf-8") as f:
        f.write("\n".join(sorted(lines, key=lambda s: s[66:])) + "\n")
    return target


def read_manifest(path: str) -> dict[str, str]:
    """Relative path → expected sha256 (malformed lines are ignored)."""
    entries = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if m := _LINE.match(line.rstrip("\n")):
                entries[m.group(2)] = m.group(1)
    return entries


def verify_manifest(root: str, manifest: str) -> list[tuple[str, str, str]]:
    """Files whose hash differs from the manifest: ``(relative path, expected, actual)``.

    A file the manifest lists that no longer exists is reported with actual ``"missing"``.
    """
    bad = []
    for rel, expected in read_manifest(manifest).items():
        path = os.path.join(root, rel)
        actual = sha256_file(path) if os.path.isfile(path) else "missing"
        if actual != expected:
            bad.append((rel, expected, actual))
    return bad
