"""Supervised local deployments: dead stubs and workers come back, a dead server is restarted, nothing is orphaned."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

import mfn
from mfn.deploy import local, state
from mfn.deploy.supervision import read_status
from mfn.errors import MfnError
from mfn.servers.http import request
from mfn.servers.process import children, is_running, process_start_time
from tests.conftest import wait_for
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
    mfn.package(TEXT_STATS, store, target="torchserve")
    return store


def answers(name: str, timeout_s: float) -> float:
    """Seconds until text_stats answers correctly through the deployment, failing after `timeout_s`."""
    started = time.monotonic()
    last_error = None
    while time.monotonic() - started < timeout_s:
        try:
            with mfn.Client(name, timeout_s=5.0, retries=0) as client:
                if client.infer("text_stats", {"text": ["a b"]})["n_words"].tolist() == [[2]]:
                    return time.monotonic() - started
        except MfnError as error:
            last_error = error
        time.sleep(0.2)
    raise AssertionError(f"{name} did not answer within {timeout_s} s: {last_error}")


def server_pid(deployment) -> int:
    return wait_for(lambda: read_status(deployment).server_pid, 30, "the server pid")


def test_a_killed_triton_stub_is_detected_and_its_model_reloaded(text_repository):
    deployment = local.deploy(text_repository, name="stub-kill")
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
        local.undeploy("stub-kill")


def test_a_request_that_crashes_triton_is_followed_by_a_restart_on_the_same_ports(text_repository, mfn_home):
    deployment = local.deploy(text_repository, name="crash")
    try:
        first_server = server_pid(deployment)
        first_stubs = {pid: process_start_time(pid) for pid in children(first_server)}
        first_regions = {r for r in owned_shm_regions(mfn_home) if r.startswith(deployment.shm_prefix)}
        assert first_stubs and first_regions
        # Triton 2.51 parses JSON recursively: a deep enough "data" array overflows its stack (SIGSEGV).
        depth = 300_000
        body = ('{"inputs":[{"name":"text","shape":[1,1],"datatype":"BYTES","data":' + "[" * depth + '"x"' + "]" * depth + "}]}").encode()
        # Only a holder of the inference key gets this far: Triton refuses a restricted API before parsing.
        key = {"Authorization": f"Bearer {state.read_key(deployment, 'inference')}"}
        request("POST", f"{deployment.http_url}/v2/models/text_stats/infer", timeout_s=10.0, body=body, headers=key)
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
        local.undeploy("crash")


def test_a_killed_torchserve_frontend_is_restarted_with_its_models(text_store):
    deployment = local.deploy(text_store, name="ts-crash")
    try:
        (frontend,) = [pid for pid in group_members(server_pid(deployment)) if "java" in Path(f"/proc/{pid}/cmdline").read_text()]
        os.kill(frontend, signal.SIGKILL)
        status = wait_for(lambda: (s := read_status(deployment)).restarts == 1 and s.state == "running" and s, RESTART_S, "a restart")
        assert status.last_exit.startswith("exit code")  # the launcher reports its Java frontend's death
        answers("ts-crash", RECOVERY_S)
        assert read_status(deployment).models["text_stats"].health == "ready"
    finally:
        local.undeploy("ts-crash")


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
    deployment = local.deploy(text_repository if target == "triton" else text_store, name=f"orphan-{target}")
    server = server_pid(deployment)
    assert len(group_members(server)) >= 2  # the server and its stubs, or TorchServe's launcher, Java and worker
    os.kill(deployment.pid, signal.SIGKILL)
    wait_for(lambda: not group_members(server), 30, "every server process to stop with its supervisor")
    assert not state.get(f"orphan-{target}").running
    local.undeploy(f"orphan-{target}")
