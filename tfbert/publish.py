"""Publishing a directory without ever showing half of it, or destroying someone else's.

Every artifact tfbert writes (an exported version, a fine-tuned checkpoint) is built in a
staging directory beside its target and renamed into place only when it is complete and
verified. Several writers may share one parent directory — CI jobs exporting versions of a
model into the repository TF Serving watches — so:

- each staging directory carries its owner in its name (``.tmp-<label>+<host>+<pid>+<start>+<random>``,
  ``<start>`` being the process's start time, so a reused pid is not mistaken for its owner);
  only those whose owner has died are removed, and only on the owner's host;
- choosing a name (an export's version) and publishing happen under an exclusive ``flock`` on
  the parent directory, which every tfbert writer takes;
- publication is a rename that never replaces: ``renameat2(RENAME_NOREPLACE)``, or
  ``RENAME_EXCHANGE`` when the caller asked to overwrite (the old and new trees are swapped in
  one step, so a reader sees one whole version or the other, never a mix or a gap).

What this assumes: one local POSIX filesystem (ext4, xfs, btrfs, tmpfs, overlayfs). On a
filesystem without ``renameat2`` flags, the same checks are made under the lock and then a
plain ``rename`` publishes; an overwrite then leaves the version missing for the moment
between two renames. On NFS, ``flock`` is only as good as the server's lock support, and a
writer on another host is never judged dead (its staging directories are left alone).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import fcntl
import os
import re
import secrets
import shutil
import socket
import stat
import time
from collections.abc import Callable, Iterator

from tfbert.errors import BadInputError, ExportError

STAGING_PREFIX = ".tmp-"
_LEGACY_STALE_SECONDS = 3600  # staging directories of tfbert before owners were recorded
_AT_FDCWD = -100
_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname()) or "host"


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (``/proc/<pid>/stat`` field 22); None if it
    does not exist (0 where ``/proc`` is missing: a live pid is then trusted as the owner)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[19])
    except FileNotFoundError:
        if not os.path.isdir("/proc"):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return None
            except PermissionError:
                pass
            return 0
        return None
    except (OSError, IndexError, ValueError):
        return None


@dataclasses.dataclass(frozen=True)
class Owner:
    """The process that owns a staging directory."""

    host: str
    pid: int
    start: int

    @classmethod
    def me(cls) -> Owner:
        return cls(_host(), os.getpid(), _start_time(os.getpid()) or 0)

    def alive(self) -> bool:
        """False only when the owner is known to be gone (same host, pid ended or reused)."""
        if self.host != _host():
            return True
        start = _start_time(self.pid)
        return start is not None and (start == self.start or 0 in (start, self.start))

    def __str__(self) -> str:
        return f"pid {self.pid} on {self.host}"


@dataclasses.dataclass(frozen=True)
class Staging:
    """A staging directory: ``label`` (what it will become, e.g. a version) and its owner."""

    path: str
    label: str
    owner: Owner | None  # None: written by a tfbert that did not record owners

    @classmethod
    def parse(cls, path: str) -> Staging | None:
        name = os.path.basename(path)
        if not name.startswith(STAGING_PREFIX):
            return None
        parts = name[len(STAGING_PREFIX):].rsplit("+", 4)
        if len(parts) == 5 and parts[2].isdigit() and parts[3].isdigit():
            return cls(path, parts[0], Owner(parts[1], int(parts[2]), int(parts[3])))
        return cls(path, "", None)

    def stale(self) -> bool:
        if self.owner is not None:
            return not self.owner.alive()
        try:
            return time.time() - os.path.getmtime(self.path) > _LEGACY_STALE_SECONDS
        except OSError:
            return False


def stagings(directory: str) -> list[Staging]:
    """The staging directories in ``directory``."""
    if not os.path.isdir(directory):
        return []
    found = (Staging.parse(os.path.join(directory, entry)) for entry in sorted(os.listdir(directory)))
    return [s for s in found if s is not None]


def remove_stale(directory: str, label: str | None = None) -> list[str]:
    """Delete the staging directories in ``directory`` whose owner has died; one line for each.

    With ``label``, only those staging that name (in a directory tfbert does not own, such as a
    fine-tune's parent, nothing else is touched). Call it with the directory's lock held
    (:func:`locked`), so a writer cannot start between the check and the removal.
    """
    removed = []
    for staging in stagings(directory):
        if label is not None and (staging.owner is None or staging.label != label):
            continue
        if staging.stale():
            shutil.rmtree(staging.path, ignore_errors=True)
            whose = f"by {staging.owner}, which has ended" if staging.owner else "by an older tfbert"
            removed.append(f"removed {os.path.basename(staging.path)}, left {whose}")
    return removed


def make_staging(directory: str, label: str) -> str:
    """Create an owned staging directory for ``label`` in ``directory`` (mode 0755)."""
    os.makedirs(directory, exist_ok=True)
    owner = Owner.me()
    path = os.path.join(directory, f"{STAGING_PREFIX}{label}+{owner.host}+{owner.pid}+{owner.start}+"
                                   f"{secrets.token_hex(4)}")
    os.mkdir(path)
    os.chmod(path, 0o755)
    return path


@contextlib.contextmanager
def locked(directory: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``directory`` itself (no lock file is left behind)."""
    os.makedirs(directory, exist_ok=True)
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _renameat2(source: str, target: str, flags: int) -> bool:
    """``renameat2``; False where the kernel, libc or filesystem lacks it (the caller falls back)."""
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    if function(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), flags) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), target)


def publish(staging: str, target: str, *, overwrite: bool = False) -> None:
    """Rename ``staging`` to ``target`` — never over an existing ``target`` unless ``overwrite``,
    and then by swapping the two in one step. Call it with the parent's lock held.

    Raises:
        FileExistsError: ``target`` exists and ``overwrite`` is False.
        OSError: the rename failed.
    """
    if overwrite and os.path.lexists(target):
        old = staging  # after the swap, the staging path holds the old tree
        if not _renameat2(staging, target, _RENAME_EXCHANGE):
            old = f"{staging}-old"
            os.rename(target, old)
            os.rename(staging, target)
        shutil.rmtree(old, ignore_errors=True)
        return
    if os.path.lexists(target):
        raise FileExistsError(errno.EEXIST, "exists", target)
    if not _renameat2(staging, target, _RENAME_NOREPLACE):
        os.rename(staging, target)


@contextlib.contextmanager
def published(target: str, *, overwrite: bool = False,
              progress: Callable[[str], None] | None = None) -> Iterator[str]:
    """An owned staging directory beside ``target``, published as ``target`` when the block
    ends without an error and removed whatever happens.

    A dead writer's staging directory for the same name is removed first (a line to
    ``progress`` for each); nothing else in ``target``'s parent is touched.

    Raises:
        BadInputError: ``target`` appeared while the block ran, and ``overwrite`` is False.

    Example:
        >>> with published("out/my-classifier") as staging:  # doctest: +SKIP
        ...     write_checkpoint(model, staging)
    """
    target = os.path.abspath(target)
    parent, name = os.path.split(target)
    with locked(parent):
        for line in remove_stale(parent, label=name):
            if progress is not None:
                progress(line)
        staging = make_staging(parent, name)
    try:
        yield staging
        apply_umask(staging)
        with locked(parent):
            try:
                publish(staging, target, overwrite=overwrite)
            except FileExistsError:
                raise BadInputError("the output directory appeared while this run wrote it; nothing was replaced",
                                    where=target, fix="pass --overwrite or choose another --output_dir") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def current_umask() -> int:
    """This process's umask (read from /proc where it can be, so it is never changed, even briefly)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(tree: str) -> None:
    """Give ``tree`` the modes a plain copy would have: directories 0777 and files 0666, less the umask.

    Staging directories are made 0755 and some writers create 0600 files (safetensors' ``save_file``
    does), which a user would not expect of a published checkpoint.
    """
    mask = current_umask()
    _set_modes(tree, 0o777 & ~mask, 0o666 & ~mask)


def make_readable(tree: str) -> None:
    """Directories 0755 and files 0644 under ``tree``: a model server usually runs as another user."""
    _set_modes(tree, 0o755, 0o644)


def _set_modes(tree: str, directory_mode: int, file_mode: int) -> None:
    os.chmod(tree, directory_mode)
    for root, dirs, files in os.walk(tree):
        for name in dirs:
            os.chmod(os.path.join(root, name), directory_mode)
        for name in files:
            os.chmod(os.path.join(root, name), file_mode)


def check_readable_by_others(directory: str) -> None:
    """A directory a server running as another user must list: refuse it if others cannot.

    Raises:
        ExportError: ``directory`` lacks read and search permission for other users.
    """
    mode = stat.S_IMODE(os.stat(directory).st_mode)
    if mode & 0o005 != 0o005:
        raise ExportError("other users cannot read this directory, so a model server running as another user "
                          "would not see the versions; nothing was published", where=directory,
                          expected="mode with o+rx (e.g. 0755)", actual=f"{mode:04o}",
                          fix=f"chmod 755 {directory}")
