"""Watching the processes a test starts — and only those, never the whole machine.

A test that looks for leftover processes must not see another export running beside the
suite, and must not count a process that has ended as alive. :func:`own_descendants` makes
this test process a child subreaper (Linux ``PR_SET_CHILD_SUBREAPER``), so a grandchild
orphaned by a killed child is re-parented to us, not to init: every process the test
started, directly or not, stays in our own tree where we can see it. An orphan that ends is
left a zombie of the test process (harmless, gone with it), and a zombie counts as ended.
"""

from __future__ import annotations

import contextlib
import ctypes
import time
from collections.abc import Callable, Iterator

import psutil

_PR_SET_CHILD_SUBREAPER = 36


def _set_subreaper(on: bool) -> None:
    if ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


def living(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Those of ``processes`` still running: an ended process (gone, or a zombie no one has
    reaped yet) is not alive."""
    alive = []
    for process in processes:
        try:
            if process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.NoSuchProcess:
            pass
    return alive


@contextlib.contextmanager
def own_descendants() -> Iterator[Callable[[str], list[psutil.Process]]]:
    """Yield ``find(marker)``: the living processes in this process's tree whose command line
    contains ``marker``, orphans of killed children included.

    Example:
        >>> with own_descendants() as find:  # doctest: +SKIP
        ...     subprocess.run([...])
        ...     assert not find("tfbert.export.verify")
    """
    _set_subreaper(True)
    me = psutil.Process()

    def find(marker: str) -> list[psutil.Process]:
        matches = []
        for process in me.children(recursive=True):
            try:
                if marker in " ".join(process.cmdline()):
                    matches.append(process)
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                pass
        return living(matches)

    try:
        yield find
    finally:
        _set_subreaper(False)


def wait_until_ended(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait up to ``timeout`` s for ``processes`` to end (zombies count as ended); those still alive."""
    deadline = time.monotonic() + timeout
    alive = living(processes)
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = living(alive)
    return alive
