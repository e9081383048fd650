"""How a supervised server's end is named, and the pace of its restarts.

Real processes stand in for the servers: a Python "launcher" that waits for its child and exits 0, as
TorchServe's does for its Java server, run under the same /bin/sh wrapper mfn starts TorchServe with.
"""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mfn.local.supervision import DEAD_STARTS_FAILED, HEALTHY_AFTER_S, RestartPace, Status, restart_delay_s
from mfn.servers.process import ExitWatch, children, group_on_parent_death
from tests.conftest import wait_for

# Waits for its child (`sleep`), then exits 0 whatever became of it.
LAUNCHER = [sys.executable, "-c", "import subprocess, sys; subprocess.Popen(sys.argv[1:]).wait()", "sleep", "60"]


def kernel_keeps_exit_status() -> bool:
    """Linux 6.15 and later keep a reaped process's status for pidfd holders (PIDFD_INFO_EXIT)."""
    major, minor = (int(part) for part in platform.release().split(".")[:2])
    return (major, minor) >= (6, 15)


def start(command: list[str]) -> tuple[subprocess.Popen, ExitWatch]:
    process = subprocess.Popen(command, start_new_session=True)
    wait_for(lambda: below(process.pid, "sleep"), 10, "the launcher's child")
    watch = ExitWatch(process)
    watch.watch_tree()
    return process, watch


def below(leader: int, name: str) -> int | None:
    """A running process named `name` anywhere under `leader`."""
    level = [leader]
    while level:
        found = {pid: command for parent in level for pid, (state, command) in children(parent).items() if state != "Z"}
        for pid, command in found.items():
            if command and Path(command[0]).name == name:
                return pid
        level = list(found)
    return None


def stop(process: subprocess.Popen, watch: ExitWatch) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
    watch.close()


def test_the_process_a_launcher_waited_for_is_named_with_its_signal():
    process, watch = start(group_on_parent_death(LAUNCHER))
    try:
        server = below(process.pid, "sleep")
        os.kill(server, signal.SIGKILL)
        assert process.wait(timeout=10) == 0  # what the wrapper and the launcher say
        if kernel_keeps_exit_status():
            assert watch.reason() == f"killed by SIGKILL (sleep, pid {server})"
        else:
            assert watch.reason().startswith("exit code 0 after processes below it ended")
    finally:
        stop(process, watch)


def test_a_killed_launcher_is_read_back_from_the_wrappers_128_plus_n():
    process, watch = start(group_on_parent_death(LAUNCHER))
    try:
        launcher = next(iter(children(process.pid)))
        os.kill(launcher, signal.SIGKILL)
        assert process.wait(timeout=10) == 128 + signal.SIGKILL
        assert watch.reason().startswith("killed by SIGKILL")
        assert not kernel_keeps_exit_status() or watch.reason().endswith(f"pid {launcher})")
    finally:
        stop(process, watch)


def test_a_leader_that_crashes_itself_speaks_for_itself():
    process, watch = start(LAUNCHER)
    try:
        os.kill(process.pid, signal.SIGSEGV)
        process.wait(timeout=10)
        assert watch.reason() == "killed by SIGSEGV"
    finally:
        stop(process, watch)


def test_a_process_that_ended_long_before_the_leader_is_not_its_cause():
    # A server that outlives its model process (as Triton outlives a stub), then exits 0 when its input closes.
    process = subprocess.Popen(["/bin/sh", "-c", "sleep 60 & read line"], stdin=subprocess.PIPE, start_new_session=True)
    wait_for(lambda: below(process.pid, "sleep"), 10, "the model process")
    watch = ExitWatch(process)
    watch.watch_tree()
    try:
        os.kill(below(process.pid, "sleep"), signal.SIGKILL)
        wait_for(lambda: below(process.pid, "sleep") is None, 10, "the model process's end")
        watch.forget_ended(settle_s=0.0)  # seen ended while the leader runs,
        watch.forget_ended(settle_s=0.0)  # and for longer than the settling time
        process.communicate(b"\n", timeout=10)
        assert watch.reason() == "exit code 0"
    finally:
        stop(process, watch)


def test_pidfds_are_closed():
    before = set(os.listdir("/proc/self/fd"))
    process, watch = start(group_on_parent_death(LAUNCHER))
    stop(process, watch)
    assert set(os.listdir("/proc/self/fd")) <= before


@pytest.mark.parametrize(("crashes", "delay_s"), [(1, 0.0), (2, 1.0), (3, 2.0), (6, 16.0), (7, 30.0), (10_000, 30.0)])
def test_restarts_in_a_row_are_spaced_out_up_to_the_cap(crashes, delay_s):
    assert restart_delay_s(crashes, cap_s=30.0) == delay_s


def test_a_server_that_keeps_crashing_is_restarted_for_ever_and_the_status_says_why():
    status = Status(state="running")
    pace = RestartPace(status, cap_s=30.0)
    pace.serving()
    delays = []
    for _ in range(50):  # each restart serves for a moment, then a request crashes it again
        delays.append(pace.ended("killed by SIGSEGV"))
        assert status.state == "restarting" and status.next_attempt_at is not None
        pace.restarted()
    assert delays[:8] == [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0] and set(delays[8:]) == {30.0}
    assert (status.state, status.restarts, status.crashes_in_a_row, status.next_attempt_at) == ("running", 50, 50, None)
    assert status.last_exit.startswith("killed by SIGSEGV at ") and status.last_exit.endswith("; 50 crashes in a row")
    pace.ended("killed by SIGSEGV")
    assert "; 51 crashes in a row; next attempt at " in status.last_exit


def test_a_healthy_run_ends_the_crashes_in_a_row():
    status = Status(state="running")
    pace = RestartPace(status, cap_s=30.0)
    pace.serving()
    for _ in range(3):
        pace.ended("killed by SIGKILL")
        pace.restarted()
    assert status.crashes_in_a_row == 3 and not pace.ran_healthy()
    pace.served_since -= HEALTHY_AFTER_S
    assert pace.ran_healthy() and status.crashes_in_a_row == 0
    assert pace.ended("killed by SIGKILL") == 0.0  # restarted at once, within a client's retry budget
    assert status.last_exit.endswith("; restarting at once")


def test_only_a_server_that_never_becomes_live_fails_the_deployment():
    status = Status(state="running")
    pace = RestartPace(status, cap_s=30.0)
    pace.ended("killed by SIGKILL")
    for _ in range(DEAD_STARTS_FAILED - 1):
        assert pace.ended("restart failed: torchserve did not start", became_live=False) is not None
    pace.ended("killed by SIGKILL before its models were ready")  # it was live: the count starts again
    for _ in range(DEAD_STARTS_FAILED - 1):
        assert pace.ended("restart failed: torchserve did not start", became_live=False) is not None
    assert pace.ended("restart failed: torchserve did not start", became_live=False) is None
    assert status.state == "failed" and status.next_attempt_at is None
    assert status.last_exit.endswith(f"; gave up: it did not become live in {DEAD_STARTS_FAILED} restarts in a row")
