"""tfbert's cache: files it can always rebuild, kept to save start-up time.

The directory is ``$TFBERT_CACHE`` if set, else ``$XDG_CACHE_HOME/tfbert``, else
``~/.cache/tfbert``; ``TFBERT_CACHE=off`` disables it. Entries are numpy ``.npz`` archives
read without pickle (a zip whose CRC-32 catches a truncated or corrupted entry); any entry
that cannot be read is rebuilt and rewritten, and a directory that cannot be written only
means nothing is cached.
"""

from __future__ import annotations

import logging
import os
import tempfile
import zipfile

import numpy as np

log = logging.getLogger(__name__)


def cache_dir(*parts: str) -> str | None:
    """``<cache>/<parts...>``, or None when caching is off."""
    root = (os.environ.get("TFBERT_CACHE") or "").strip()
    if root.lower() in ("off", "0", "false", "none"):
        return None
    if not root:  # unset or empty: the default
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "tfbert")
    return os.path.join(root, *parts)


def read_arrays(path: str | None) -> dict[str, np.ndarray] | None:
    """The arrays of the cache entry ``path``, or None when it is absent or unreadable."""
    if path is None or not os.path.exists(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        log.info("ignoring unreadable cache entry %s (%s); rebuilding it", path, e)
        return None


def write_arrays(path: str | None, arrays: dict[str, np.ndarray]) -> bool:
    """Write a cache entry through a temporary sibling and a rename (readers never see half a file).

    Returns:
        False when it could not be written (read-only home, full disk): the caller just goes on.
    """
    if path is None:
        return False
    tmp = None
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=os.path.dirname(path))
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
        return True
    except OSError as e:
        log.info("not caching %s (%s)", path, e)
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        return False
