"""Each deployment's one lock (`$MFN_HOME/deployments/NAME/lock`, see mfn.local.state)."""

from __future__ import annotations

import fcntl
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from mfn.errors import MfnError
from mfn.files import private_dir
from mfn.local import state

_held = threading.local()  # name -> how deep this thread holds the deployment's lock
LOCK_POLL_S = 0.05


class GaveUp(MfnError):
    """A wait for a deployment's lock that `exclusive`'s `give_up` ended."""


@contextmanager
def exclusive(name: str, give_up: Callable[[], bool] | None = None) -> Iterator[None]:
    """Hold the deployment's one lock: deploy, undeploy, rollout commands and the rollout controller of one name take
    turns. A thread that holds it may take it again (a promotion deploys under the route's turn); the lock's holder
    removes the deployment's directory when nothing lasting is left in it, so names used once leave nothing behind.

    Args:
        give_up: Asked while waiting; True ends the wait with GaveUp (a controller told to stop, whose stopper
            may hold the lock).
    """
    state.check_name(name)
    state.refuse_older_layout(name)
    give_up = give_up or _give_up
    depth = getattr(_held, "names", None)
    if depth is None:
        depth = _held.names = {}
    if depth.get(name):
        depth[name] += 1
        try:
            yield
        finally:
            depth[name] -= 1
        return
    with file_lock(state.deployment_dir(name) / state.LOCK_FILE, remove_after=lambda: not state.lasts(name), give_up=give_up):
        depth[name] = 1
        try:
            yield
        finally:
            del depth[name]


@contextmanager
def file_lock(path: Path, remove_after: Callable[[], bool] = lambda: False,
              give_up: Callable[[], bool] | None = None) -> Iterator[None]:
    """Hold an exclusive lock on `path`, created 0600 (its directory 0700) if it is not there.

    `path`'s directory is deleted on the way out when `remove_after()` says so, while the lock is still held. A
    process that was waiting on the deleted file then holds a lock nobody else can find; so after acquiring, each
    holder checks that `path` is still the file it locked (same inode) and otherwise locks the new one.
    """
    while True:
        private_dir(path.parent)
        try:
            lock = os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "w")
        except FileNotFoundError:  # a holder removed the directory between its making and this open
            continue
        try:
            _acquire(lock.fileno(), path, give_up)
        except BaseException:
            lock.close()
            raise
        if _same_file(path, lock.fileno()):
            break
        lock.close()
    with lock:
        try:
            yield
        finally:
            if remove_after():
                shutil.rmtree(path.parent, ignore_errors=True)


def _acquire(descriptor: int, path: Path, give_up: Callable[[], bool] | None) -> None:
    if give_up is None:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        return
    while True:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if give_up():
                raise GaveUp(f"stopped waiting for {path}") from None
            time.sleep(LOCK_POLL_S)


def _same_file(path: Path, fd: int) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino)


_give_up: Callable[[], bool] | None = None


def give_up_when(predicate: Callable[[], bool] | None) -> None:
    """Make every wait for a lock in this process end with GaveUp once `predicate()` is True: a process told to stop
    (the rollout controller) while the one that stops it holds the lock it waits for."""
    global _give_up
    _give_up = predicate
