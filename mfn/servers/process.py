"""Start, watch and stop server processes that outlive the command that started them."""

from __future__ import annotations

import fcntl
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
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


GROUP_WRAPPER = ["/bin/sh", "-c", 'trap "kill -TERM 0" HUP; "$@" & wait $!']


def group_on_parent_death(command: list[str]) -> list[str]:
    """Wrap `command` so the parent-death signal (SIGHUP) stops its whole process group, not only its leader.

    For servers whose launcher does not pass a SIGTERM on: TorchServe's Python launcher exits on SIGTERM
    and leaves its Java frontend and workers serving. The wrapper exits with the command's status, as a shell
    does: 128 + N for a command killed by signal N (`ExitWatch` reads it back).
    """
    return [*GROUP_WRAPPER, command[0], *command]


def exit_reason(returncode: int) -> str:
    """A process's end in words: "exit code 1" or "killed by SIGSEGV"."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


# Linux 6.15 keeps a process's exit status for whoever holds a pidfd on it, even after its own parent reaped it
# (PIDFD_GET_INFO asking for PIDFD_INFO_EXIT): the one way to learn how a grandchild ended.
_PIDFD_INFO_EXIT = 1 << 3
_PIDFD_INFO_SIZE = 64  # struct pidfd_info as first released; its last field became exit_code in 6.15
_PIDFD_INFO_EXIT_CODE_AT = 60
_PIDFD_GET_INFO = (3 << 30) | (_PIDFD_INFO_SIZE << 16) | (0xFF << 8) | 11  # _IOWR(PIDFS_IOCTL_MAGIC, 11, ...)
EXIT_SETTLE_S = 3.0


@dataclass
class _Watched:
    pid: int
    depth: int  # 1 for the leader's children, 2 for theirs, ...
    name: str
    pidfd: int
    ended_at: float | None = None  # when it was first seen ended while the leader still ran


class ExitWatch:
    """How a server ended, where its leader's exit status does not say.

    TorchServe runs as /bin/sh (group_on_parent_death) → its Python launcher → Java; when Java is killed, the
    launcher, which waits for it, exits 0, and so does the wrapper. So once the server is live, a pidfd is taken
    on every process below the leader; when the leader ends with status 0, or is the wrapper, the shallowest of
    them that ended abnormally names the cause (its status where the kernel keeps it for pidfds: Linux 6.15+).
    A process that ended well before the leader (a Triton stub or a TorchServe worker, replaced by its server)
    did not end it and is forgotten (`forget_ended`).
    """

    def __init__(self, process: subprocess.Popen) -> None:
        self.process = process
        self._watched: dict[int, _Watched] = {}

    def watch_tree(self) -> None:
        """Take a pidfd on each running process below the leader that has none yet (call once it is live)."""
        level, depth = [self.process.pid], 0
        while level:
            depth += 1
            below = {pid: command for parent in level for pid, (state, command) in children(parent).items() if state != "Z"}
            for pid, command in below.items():
                if pid not in self._watched:
                    try:
                        pidfd = os.pidfd_open(pid)
                    except OSError:  # it ended meanwhile
                        continue
                    self._watched[pid] = _Watched(pid, depth, Path(command[0]).name if command else "?", pidfd)
            level = list(below)

    def forget_ended(self, settle_s: float = EXIT_SETTLE_S) -> None:
        """Forget processes that ended over `settle_s` ago while the leader ran on (call while it runs): a leader
        that waits for its child (a launcher) takes a moment to follow it."""
        now = time.monotonic()
        for watched in list(self._watched.values()):
            if watched.ended_at is None:
                if _has_ended(watched.pidfd):
                    watched.ended_at = now
            elif now - watched.ended_at > settle_s:
                os.close(watched.pidfd)
                del self._watched[watched.pid]

    def reason(self) -> str:
        """The ended server's end in words: "killed by SIGKILL (java, pid 123)", or its leader's own end."""
        returncode = self.process.returncode
        assert returncode is not None, "reason() is for a leader that has ended (after poll or wait)"
        args = self.process.args
        wrapper = isinstance(args, list) and args[:len(GROUP_WRAPPER)] == GROUP_WRAPPER
        if wrapper and returncode > 128:  # a shell's way of saying its command was killed by signal N
            returncode = 128 - returncode
        if returncode != 0 and not wrapper:
            return exit_reason(returncode)  # a server that exits or crashes by itself says so (tritonserver)
        ended = sorted((watched for watched in self._watched.values() if _has_ended(watched.pidfd)),
                       key=lambda watched: (watched.depth, watched.pid))
        for watched in ended:
            status = _exit_status(watched.pidfd)
            if status is not None and os.waitstatus_to_exitcode(status) != 0:
                return f"{exit_reason(os.waitstatus_to_exitcode(status))} ({watched.name}, pid {watched.pid})"
        if returncode == 0 and any(_exit_status(watched.pidfd) is None for watched in ended):
            return "exit code 0 after processes below it ended (how they ended, Linux 6.15 or later tells)"
        return exit_reason(returncode)

    def close(self) -> None:
        """Close the pidfds."""
        for watched in self._watched.values():
            os.close(watched.pidfd)
        self._watched = {}


def _has_ended(pidfd: int) -> bool:
    """Whether the process behind `pidfd` has ended (a pidfd polls readable then)."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(0))


def _exit_status(pidfd: int) -> int | None:
    """The wait status the process behind `pidfd` ended with; None while it runs or where the kernel does not
    keep it (before Linux 6.15)."""
    info = bytearray(_PIDFD_INFO_SIZE)
    struct.pack_into("Q", info, 0, _PIDFD_INFO_EXIT)
    try:
        fcntl.ioctl(pidfd, _PIDFD_GET_INFO, info)
    except OSError:  # ENOTTY / EINVAL before Linux 6.13; ESRCH for a process that ended with no status kept
        return None
    if not struct.unpack_from("Q", info, 0)[0] & _PIDFD_INFO_EXIT:
        return None
    return struct.unpack_from("i", info, _PIDFD_INFO_EXIT_CODE_AT)[0]


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
