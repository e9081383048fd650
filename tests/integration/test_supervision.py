"""Supervised local deployments: dead stubs and workers come back, a dead server is restarted however often it dies
and says how it died, a server that stops answering is only recorded as such, nothing is orphaned."""

from __future__ import annotations

import os
import platform
import signal
import time
from dataclasses import replace
from pathlib import Path

import pytest

import mfn
from mfn.local import deployments, state, supervision
from mfn.local.supervision import read_status
from mfn.errors import MfnError
from mfn.servers.http import request
from mfn.servers.process import children, is_running, process_start_time
from tests.conftest import HANDLERS, wait_for
from tests.integration.conftest import TEXT_STATS
from tests.processes import owned_shm_regions

pytestmark = pytest.mark.integration
RECOVERY_S = 20.0  # a dead model is reloaded within 10 s; twice that leaves room on a loaded machine
RESTART_S = 60.0


@pytest.fixture(scope="module")
def text_repository(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("supervised")
    mfn.package(TEXT_STATS, repo)
    return repo


@pytest.fixture(scope="module")
def text_store(tmp_path_factory) -> Path:
    store = tmp_path_factory.mktemp("supervised-store")
    mfn.package(TEXT_STATS, store, server="torchserve")
    return store


@pytest.fixture(scope="module")
def slow_store(tmp_path_factory) -> Path:
    """text_stats beside a model whose worker takes $MFN_TEST_SETUP_DELAY_S to load."""
    store = tmp_path_factory.mktemp("supervised-slow-store")
    mfn.package(TEXT_STATS, store, server="torchserve")
    mfn.package(f"{HANDLERS / 'slow_setup.py'}:SlowSetup", store, server="torchserve")
    return store


@pytest.fixture
def short_backoff(monkeypatch):
    """Deployments made in the test wait at most 2 s between restarts in a row (30 s otherwise)."""
    spawn = supervision.spawn
    monkeypatch.setattr(supervision, "spawn",
                        lambda plan, workdir: spawn(replace(plan, restart_backoff_cap_s=2.0), workdir))


@pytest.fixture
def quick_health(monkeypatch):
    """Deployments made in the test check their server's health every second (every 5 s otherwise)."""
    spawn = supervision.spawn
    monkeypatch.setattr(supervision, "spawn",
                        lambda plan, workdir: spawn(replace(plan, health_interval_s=1.0), workdir))


def answers(name: str, timeout_s: float) -> float:
    """Seconds until text_stats answers correctly through the deployment, failing after `timeout_s`."""
    started = time.monotonic()
    errors: list[MfnError] = []

    def answered() -> bool:
        try:
            with mfn.Client(name, timeout_s=5.0, retries=0) as client:
                return client.infer("text_stats", {"text": ["a b"]})["n_words"].tolist() == [[2]]
        except MfnError as error:
            errors.append(error)
            return False

    try:
        wait_for(answered, timeout_s, f"{name} to answer text_stats", every_s=0.2)
    except AssertionError as timed_out:
        raise AssertionError(f"{timed_out}; the last error: {errors[-1] if errors else None}") from None
    return time.monotonic() - started


def server_pid(deployment) -> int:
    return wait_for(lambda: read_status(deployment).server_pid, 30, "the server pid")


def test_a_killed_triton_stub_is_detected_and_its_model_reloaded(text_repository):
    deployment = deployments.deploy(text_repository, name="stub-kill", drain_timeout_s=0)
    try:
        stubs = [pid for pid, (_, command) in children(server_pid(deployment)).items() if "text_stats" in " ".join(command)]
        assert len(stubs) == 1
        os.kill(stubs[0], signal.SIGKILL)
        # Triton itself keeps saying the model is ready; only the supervisor knows better.
        answers("stub-kill", RECOVERY_S)
        health = wait_for(lambda: read_status(deployment).models["text_stats"].reloads, RECOVERY_S, "a recorded reload")
        assert health == 1
        assert read_status(deployment).models["text_stats"].health == "ready"
        assert read_status(deployment).restarts == 0
    finally:
        deployments.undeploy("stub-kill")


def crash_triton(deployment) -> None:
    """Send the request that crashes tritonserver 2.51 (SIGSEGV)."""
    # Triton 2.51 parses JSON recursively: a deep enough "data" array overflows its stack.
    depth = 300_000
    body = ('{"inputs":[{"name":"text","shape":[1,1],"datatype":"BYTES","data":' + "[" * depth + '"x"' + "]" * depth + "}]}").encode()
    # Only a holder of the inference key gets this far: Triton refuses a restricted API before parsing.
    key = {"Authorization": f"Bearer {state.read_key(deployment, 'inference')}"}
    request("POST", f"{deployment.http_url}/v2/models/text_stats/infer", timeout_s=10.0, body=body, headers=key)


def test_a_request_that_crashes_triton_is_followed_by_a_restart_on_the_same_ports(text_repository, mfn_home):
    deployment = deployments.deploy(text_repository, name="crash", drain_timeout_s=0)
    try:
        first_server = server_pid(deployment)
        first_stubs = {pid: process_start_time(pid) for pid in children(first_server)}
        first_regions = {r for r in owned_shm_regions(mfn_home) if r.startswith(deployment.shm_prefix)}
        assert first_stubs and first_regions
        crash_triton(deployment)
        status = wait_for(lambda: (s := read_status(deployment)).restarts == 1 and s.state == "running" and s, RESTART_S, "a restart")
        assert "killed by SIGSEGV" in status.last_exit
        assert status.server_pid != first_server
        answers("crash", RECOVERY_S)
        restarted = state.get("crash")
        assert restarted.ports == deployment.ports
        # The dead server's stubs are gone and its shared memory was removed.
        assert not [pid for pid, started in first_stubs.items() if is_running(pid, started)]
        assert not first_regions & owned_shm_regions(mfn_home)
    finally:
        deployments.undeploy("crash")


def restarted(deployment, count: int):
    """The status once the server has been restarted `count` times and serves again."""
    return wait_for(lambda: (s := read_status(deployment)).restarts == count and s.state == "running" and s, RESTART_S,
                    f"restart {count}")


def test_a_crash_loop_keeps_restarting_and_the_status_says_why(text_repository, short_backoff):
    deployment = deployments.deploy(text_repository, name="crash-loop", drain_timeout_s=0)
    try:
        crashes = 6  # one more than the restarts the supervisor used to give up after
        for crash in range(1, crashes + 1):
            crash_triton(deployment)
            if crash == crashes:  # caught while it waits for the next attempt (1, 2, then 2 s apart here)
                status = wait_for(lambda: (s := read_status(deployment)).state == "restarting" and s.next_attempt_at and s,
                                  RESTART_S, "the restart's wait")
                assert "killed by SIGSEGV" in status.last_exit
                assert f"{crashes} crashes in a row; next attempt at " in status.last_exit
            status = restarted(deployment, crash)
        assert status.crashes_in_a_row == crashes
        assert status.last_exit.endswith(f"{crashes} crashes in a row")
        answers("crash-loop", RECOVERY_S)
    finally:
        deployments.undeploy("crash-loop")


def kernel_keeps_exit_status() -> bool:
    """Linux 6.15 and later keep a reaped process's status for pidfd holders, how the supervisor names Java's end."""
    return tuple(int(part) for part in platform.release().split(".")[:2]) >= (6, 15)


def java(server: int) -> int:
    (frontend,) = [pid for pid in group_members(server) if "java" in Path(f"/proc/{pid}/cmdline").read_text()]
    return frontend


def zombies(pid: int) -> list[int]:
    return [child for child, (process_state, _) in children(pid).items() if process_state == "Z"]


def test_a_killed_torchserve_frontend_is_restarted_with_its_models(text_store):
    deployment = deployments.deploy(text_store, name="ts-crash", drain_timeout_s=0)
    try:
        frontend = java(server_pid(deployment))
        os.kill(frontend, signal.SIGKILL)
        status = wait_for(lambda: (s := read_status(deployment)).restarts == 1 and s.state == "running" and s, RESTART_S, "a restart")
        # Its launchers, which wait for it, both exit 0: the signal is Java's own.
        if kernel_keeps_exit_status():
            assert status.last_exit.startswith(f"killed by SIGKILL (java, pid {frontend}) at ")
        else:
            assert status.last_exit.startswith("exit code 0 after processes below it ended")
        assert not zombies(deployment.pid)  # the old wrapper was reaped
        answers("ts-crash", RECOVERY_S)
        assert read_status(deployment).models["text_stats"].health == "ready"
    finally:
        deployments.undeploy("ts-crash")


def test_a_torchserve_killed_while_its_restart_waits_for_its_models_is_restarted_at_once(slow_store, monkeypatch):
    monkeypatch.setenv("MFN_TEST_SETUP_DELAY_S", "5")  # read by slow_setup's workers, started by each restart
    deployment = deployments.deploy(slow_store, name="ts-ready-kill", drain_timeout_s=0)
    try:
        first = server_pid(deployment)
        os.kill(java(first), signal.SIGKILL)
        # A server pid is recorded once the server is live; slow_setup's worker then loads for 5 s.
        second = wait_for(lambda: (s := read_status(deployment)).server_pid != first and s.state == "restarting" and s.server_pid,
                          RESTART_S, "the restarted server to be live")
        killed = java(second)
        os.kill(killed, signal.SIGKILL)
        # Noticed at once, not after the readiness wait's 120 s: a third server serves both models.
        status = wait_for(lambda: (s := read_status(deployment)).state == "running" and s, RESTART_S, "the next restart")
        assert status.server_pid not in (first, second)
        assert status.restarts == 1 and status.crashes_in_a_row == 2
        assert "before its models were ready" in status.last_exit
        if kernel_keeps_exit_status():
            assert status.last_exit.startswith(f"killed by SIGKILL (java, pid {killed}) before its models were ready at ")
        assert {model: health.health for model, health in status.models.items()} == {"text_stats": "ready", "slow_setup": "ready"}
        assert not zombies(deployment.pid)
        answers("ts-ready-kill", RECOVERY_S)
        log = (Path(deployment.workdir) / supervision.LOG_FILE).read_text()
        assert log.count("started (restart)") == 1  # never said of the server that died while loading
    finally:
        deployments.undeploy("ts-ready-kill")


def group_members(group: int) -> set[int]:
    """Processes in process group `group` that are still running (not zombies)."""
    members = set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                fields = (proc / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[2]) == group and fields[0] != "Z":
                members.add(int(proc.name))
    return members


@pytest.mark.parametrize("target", ["triton", "torchserve"])
def test_a_killed_supervisor_takes_its_whole_server_with_it(target, text_repository, text_store):
    # The default drain: with none, Triton's own exit on SIGTERM leaves its stubs behind for longer than this waits.
    deployment = deployments.deploy(text_repository if target == "triton" else text_store, name=f"orphan-{target}")
    server = server_pid(deployment)
    assert len(group_members(server)) >= 2  # the server and its stubs, or TorchServe's launcher, Java and worker
    os.kill(deployment.pid, signal.SIGKILL)
    wait_for(lambda: not group_members(server), 30, "every server process to stop with its supervisor")
    assert not state.get(f"orphan-{target}").running
    deployments.undeploy(f"orphan-{target}")


@pytest.mark.parametrize("target", ["triton", "torchserve"])
def test_a_server_that_stops_answering_is_recorded_as_unresponsive_and_no_model_is_reloaded(
        target, text_repository, text_store, quick_health):
    name = f"paused-{target}"
    deployment = deployments.deploy(text_repository if target == "triton" else text_store, name=name, drain_timeout_s=0)
    try:
        server = server_pid(deployment)
        # Stopped, every process of the server keeps its ports: connections complete in the kernel's backlog and
        # get no answer, as when it has no file descriptor left to accept them.
        os.killpg(server, signal.SIGSTOP)
        try:
            paused = wait_for(lambda: (s := read_status(deployment)).unresponsive_checks >= 2 and s, RESTART_S,
                              "two health checks without an answer")
        finally:
            os.killpg(server, signal.SIGCONT)
        assert paused.unresponsive_since is not None
        assert paused.models["text_stats"].health == "unresponsive"
        assert "has not answered since" in paused.models["text_stats"].detail
        resumed = wait_for(lambda: (s := read_status(deployment)).unresponsive_since is None
                           and s.models["text_stats"].health == "ready" and s, RECOVERY_S, "the server to answer again")
        assert resumed.models["text_stats"].reloads == 0
        assert (resumed.restarts, resumed.server_pid, resumed.state) == (0, server, "running")
        answers(name, RECOVERY_S)
        log = (Path(deployment.workdir) / supervision.LOG_FILE).read_text()
        assert "no model is reloaded until it answers" in log and "reloading" not in log
    finally:
        deployments.undeploy(name)


def test_a_model_the_answering_server_says_is_not_ready_is_reloaded(text_repository, quick_health):
    deployment = deployments.deploy(text_repository, name="unloaded", drain_timeout_s=0)
    try:
        key = {"Authorization": f"Bearer {state.read_key(deployment, 'management')}"}
        code, body = request("POST", f"{deployment.http_url}/v2/repository/models/text_stats/unload", timeout_s=30.0,
                             body=b"{}", headers=key)
        assert code == 200, body
        status = wait_for(lambda: (s := read_status(deployment)).models["text_stats"].reloads == 1
                          and s.models["text_stats"].health == "ready" and s, RECOVERY_S, "the model reloaded")
        assert status.unresponsive_checks == 0 and status.restarts == 0
        answers("unloaded", RECOVERY_S)
    finally:
        deployments.undeploy("unloaded")
