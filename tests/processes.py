"""Find, and if need be kill, the processes and shared memory that one test session's MFN_HOME owns.

Every server mfn starts inherits MFN_HOME from its environment, so the variable names its owner
exactly: tests never touch servers that other people, or other test runs, have started.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from mfn.local.state import home_tag

SHM_DIR = Path("/dev/shm")


def owned_processes(home: Path) -> set[int]:
    """Pids of processes started with MFN_HOME=`home` (servers, stubs, workers, Prometheus, CLI children), and
    those working in a directory under it (nginx's workers, which keep none of the environment)."""
    marker = f"MFN_HOME={home}".encode()
    pids = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            environment = (proc / "environ").read_bytes()
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if marker in environment.split(b"\0") or cwd.startswith(f"{home}/"):
            pids.add(int(proc.name))
    return pids


def owned_shm_regions(home: Path) -> set[str]:
    """Shared-memory regions named with `home`'s tag."""
    return {path.name for path in SHM_DIR.glob(f"mfn_{home_tag(home)}_*")}


def kill_owned(home: Path) -> tuple[set[int], set[str]]:
    """SIGKILL what `home` owns and remove its regions; return what was found."""
    pids, regions = owned_processes(home), owned_shm_regions(home)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for region in regions:
        (SHM_DIR / region).unlink(missing_ok=True)
    return pids, regions


if __name__ == "__main__":
    # The reaper: started by the test session with a pipe on stdin, it wakes when the pipe closes, which
    # happens when the session ends, however it ends (even SIGKILL), and removes whatever is left.
    import sys

    sys.stdin.buffer.read()
    kill_owned(Path(sys.argv[1]))


NOBODY = 65534


def as_another_user(command: list[str], timeout_s: float = 30) -> subprocess.CompletedProcess:
    """Run `command` as uid/gid 65534 (nobody), the way any other local user could; root is needed to switch.

    Only programs every user may run belong in `command` (sh, cat, curl): this user cannot enter a private home.
    """
    if os.geteuid() != 0:
        pytest.skip("acting as another local user needs root (setpriv); run the suite as root, as CI does")
    return subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *command],
                          capture_output=True, timeout=timeout_s, cwd="/")


def readable_by_another_user() -> bytes:
    """Every process's command line and environment, as far as another local user can read them."""
    script = "for f in /proc/[0-9]*/cmdline /proc/[0-9]*/environ; do cat \"$f\" 2>/dev/null; echo; done"
    return as_another_user(["sh", "-c", script]).stdout
