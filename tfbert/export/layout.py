"""Where exports go, and how they get there without ever leaving half an artifact.

TF Serving watches ``<output_dir>/<name>/`` and loads every all-digit subdirectory as a
version. An export is written to a temporary sibling (``.tmp-<version>-<random>``, which a
model server ignores), verified there, and only then renamed into place — a rename is
atomic on one filesystem, so a killed export never publishes a partial version.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator

from tfbert.errors import BadInputError, ExportError

_TMP = ".tmp-"


def existing_versions(model_dir: str) -> list[int]:
    """The published versions under ``model_dir`` (all-digit subdirectories), ascending."""
    if not os.path.isdir(model_dir):
        return []
    return sorted(int(d) for d in os.listdir(model_dir)
                  if d.isdigit() and os.path.isdir(os.path.join(model_dir, d)))


def resolve_version(model_dir: str, version: int | None, overwrite: bool) -> int:
    """``version`` if given (refused when it exists, unless ``overwrite``), else the next integer."""
    versions = existing_versions(model_dir)
    if version is None:
        return (versions[-1] + 1) if versions else 1
    if version < 1:
        raise BadInputError("version must be a positive integer", where="--version", actual=version,
                            fix="pass --version=1 or higher, or leave it out for the next free version")
    if version in versions and not overwrite:
        raise BadInputError("this version is already published", where=os.path.join(model_dir, str(version)),
                            fix="pass --overwrite to replace it, or leave --version out for the next free one")
    return version


def remove_stale_temporaries(model_dir: str) -> list[str]:
    """Delete temporary directories left by killed exports; returns what was removed."""
    removed = []
    if os.path.isdir(model_dir):
        for entry in os.listdir(model_dir):
            if entry.startswith(_TMP):
                shutil.rmtree(os.path.join(model_dir, entry), ignore_errors=True)
                removed.append(entry)
    return removed


@contextlib.contextmanager
def staged_directory(target: str, overwrite: bool = False) -> Iterator[str]:
    """Yield a temporary sibling of ``target``; on success rename it to ``target``.

    If the body raises, the temporary directory is deleted and nothing is published. An
    existing ``target`` is replaced only with ``overwrite`` (moved aside first, deleted after
    the new one is in place, so a crash in between still leaves one complete version).
    """
    parent, leaf = os.path.split(os.path.abspath(target))
    os.makedirs(parent, exist_ok=True)
    if os.path.exists(target) and not overwrite:
        raise BadInputError("already exists", where=target, fix="pass --overwrite to replace it")
    tmp = tempfile.mkdtemp(prefix=f"{_TMP}{leaf}-", dir=parent)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if os.path.exists(target):
        old = tempfile.mkdtemp(prefix=f"{_TMP}old-{leaf}-", dir=parent)
        os.rename(target, os.path.join(old, leaf))
    try:
        os.rename(tmp, target)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ExportError(f"could not publish ({e})", where=target, fix="check the directory's permissions") from None
    if old:
        shutil.rmtree(old, ignore_errors=True)


def safe_name(name: str) -> str:
    """A model name usable as a directory name and a TF Serving model name."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name or ""):
        raise BadInputError("model name must be letters, digits, '_', '.' or '-'", where="--name", actual=name,
                            fix="pass e.g. --name=minilm")
    return name
