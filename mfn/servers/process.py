"""Start, watch and stop server processes that outlive the command that started them."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

PR_SET_PDEATHSIG = 1


def free_ports(count: int) -> list[int]:
    """Ports the OS assigns on 127.0.0.1; all held open together so they are distinct."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


PRIVATE_UMASK = 0o077


def start_detached(
    command: list[str], env: dict[str, str], log_file: Path, cwd: Path, parent_death_signal: int | None = None
) -> subprocess.Popen:
    """Start `command` in its own session (so its whole process group can be stopped), output appended to `log_file`.

    With `parent_death_signal`, the kernel sends it that signal when this process dies, however it dies: a
    supervised server never outlives the supervisor that owns it. The server runs with umask 077, so what
    it creates (shared-memory tensor regions, its files) is its user's alone; the log is created 0600.
    """
    with os.fdopen(os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as log:
        return subprocess.Popen(
            command,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            umask=PRIVATE_UMASK,
            preexec_fn=None if parent_death_signal is None else _on_parent_death(parent_death_signal),
        )


def _on_parent_death(signum: int) -> Callable[[], None]:
    """A preexec function asking the kernel for `signum` when the starting process dies.

    prctl is looked up before the fork (nothing is loaded in the child), the signal's disposition is reset
    (a SIGHUP ignored by nohup would be inherited and make the request useless), and a parent that died
    before prctl took effect is noticed at once.
    """
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def request_signal() -> None:
        signal.signal(signum, signal.SIG_DFL)
        prctl(PR_SET_PDEATHSIG, signum)
        if os.getppid() != parent:
            os.kill(os.getpid(), signum)

    return request_signal


def group_on_parent_death(command: list[str]) -> list[str]:
    """Wrap `command` so the parent-death signal (SIGHUP) stops its whole process group, not only its leader.

    For servers whose launcher does not pass a SIGTERM on: TorchServe's Python launcher exits on SIGTERM
    and leaves its Java frontend and workers serving. The wrapper exits with the command's own status.
    """
    return ["/bin/sh", "-c", 'trap "kill -TERM 0" HUP; "$@" & wait $!', command[0], *command]


def exit_reason(returncode: int) -> str:
    """A process's end in words: "exit code 1" or "killed by SIGSEGV"."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


def children(pid: int) -> dict[int, tuple[str, list[str]]]:
    """The direct children of `pid`: their state letter (R, S, Z, ...) and command line (empty for zombies)."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rpartition(")")[2].split()
            if int(fields[1]) != pid:
                continue
            command = (proc / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        found[int(proc.name)] = (fields[0], [part.decode(errors="replace") for part in command if part])
    return found


def process_start_time(pid: int) -> int | None:
    """The kernel's start time of `pid` (clock ticks since boot), or None if it is gone.

    Stored with the pid so a later command never signals an unrelated process that reused the pid.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def is_running(pid: int, start_time: int | None) -> bool:
    """Whether the process recorded as (`pid`, `start_time`) is still alive."""
    current = process_start_time(pid)
    return current is not None and (start_time is None or current == start_time)


def stop_process_group(pid: int, start_time: int | None, grace_s: float) -> None:
    """SIGTERM the process group led by `pid`, wait up to `grace_s`, then SIGKILL what is left."""
    if not is_running(pid, start_time):
        _kill_group(pid, signal.SIGKILL)
        return
    _kill_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and is_running(pid, start_time):
        _reap(pid)
        time.sleep(0.05)
    _kill_group(pid, signal.SIGKILL)
    _reap(pid)


def _kill_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _reap(pid: int) -> None:
    """Collect the exit status when the server is our own child, so it does not linger as a zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def descendants(pid: int) -> dict[int, list[str]]:
    """Every process below `pid` (children, their children, ...), with its command line (empty for zombies)."""
    found: dict[int, list[str]] = {}
    parents = [pid]
    while parents:
        below = {child: command for parent in parents for child, (_, command) in children(parent).items()}
        found.update(below)
        parents = list(below)
    return found


LOG_MAX_BYTES = 16 * 1024 * 1024
LOG_KEEP = 3


def rotate_log(log: Path, max_bytes: int = LOG_MAX_BYTES, keep: int = LOG_KEEP) -> bool:
    """Rotate a server's log once it passes `max_bytes`: copy it to `<log>.1` (older copies shift up to
    `<log>.<keep>`) and truncate it in place.

    Copy-and-truncate, because the server keeps the file open: it appends (start_detached opens logs
    with O_APPEND), so after the truncation its next line lands at the start of the file. Lines written
    between the copy and the truncation are lost, as with logrotate's copytruncate.
    """
    try:
        if log.stat().st_size <= max_bytes:
            return False
    except FileNotFoundError:
        return False
    for index in range(keep - 1, 0, -1):
        older = log.with_name(f"{log.name}.{index}")
        if older.exists():
            older.replace(log.with_name(f"{log.name}.{index + 1}"))
    copy = log.with_name(f"{log.name}.1")
    shutil.copyfile(log, copy)
    copy.chmod(0o600)
    with log.open("r+b") as handle:
        handle.truncate(0)
    return True


def find_tool(name: str, missing: str) -> str:
    """An executable from this environment's own bin directory (where `make setup` and the extras put nginx and
    k6), else from PATH; MfnError with `missing` (what to install, and how) when neither has it."""
    import sys

    from mfn.errors import MfnError

    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise MfnError(missing)
    return found
