"""Deployment lifecycle on a real tritonserver: failures, cleanup, state across shells, foreground mode."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import mfn
from mfn.cli.main import cli
from mfn.local import deployments, state
from mfn.errors import DeployError
from tests.conftest import HANDLERS, wait_for
from tests.integration.conftest import TEXT_STATS
from tests.processes import owned_processes, owned_shm_regions

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def small_repository(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("small")
    mfn.package(TEXT_STATS, repo)
    return repo


def pid_alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2][:3]


def test_deploy_json_then_undeploy_leaves_no_process_or_shared_memory(small_repository, mfn_home):
    result = CliRunner().invoke(cli, ["deploy", str(small_repository), "--name", "lifecycle", "--json", "--drain-timeout", "0"])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""  # --json: one document, no progress lines
    deployed = json.loads(result.stdout)
    directory = state.deployment_dir("lifecycle")
    assert sorted(path.name for path in directory.iterdir()) == ["deployment.json", "lock", "server"]
    assert Path(deployed["workdir"]) == directory / "server" and (directory / "server" / "plan.json").is_file()
    assert deployed["models"] == ["text_stats"]
    assert set(deployed["endpoints"]) == {"http", "grpc", "metrics"}
    assert deployed["cold_start"]["server_start_s"] > 0 and "text_stats" in deployed["cold_start"]["models"]
    owned_regions = {r for r in owned_shm_regions(mfn_home) if r.startswith(deployed["shm_prefix"])}
    assert owned_regions, "the Python backend should hold shared memory under the deployment's prefix"
    assert pid_alive(deployed["pid"])

    result = CliRunner().invoke(cli, ["undeploy", "lifecycle"])
    assert result.exit_code == 0 and "stopped lifecycle" in result.output
    assert not pid_alive(deployed["pid"])
    assert not {r for r in owned_shm_regions(mfn_home) if r.startswith(deployed["shm_prefix"])}
    assert state.load("lifecycle") is None
    assert not directory.exists()


def test_deploy_shows_each_step_on_stderr_as_the_supervisor_reports_it(small_repository, mfn_home):
    result = CliRunner().invoke(cli, ["deploy", str(small_repository), "--name", "shown", "--drain-timeout", "0"])
    try:
        assert result.exit_code == 0, result.output
        steps = result.stderr.splitlines()
        assert steps[0].startswith("starting triton for shown (http "), steps
        assert steps[1:] == ["loading text_stats ...", steps[2]] and steps[2].startswith("text_stats ready ("), steps
        assert result.stdout.startswith("deployed shown: text_stats\n")
    finally:
        CliRunner().invoke(cli, ["undeploy", "shown"])


def test_a_model_that_fails_to_load_reports_the_reason_and_leaves_nothing_running(tmp_path, mfn_home):
    mfn.package(f"{HANDLERS / 'bad_outputs.py'}:FailsToLoad", tmp_path)
    processes_before = owned_processes(mfn_home)
    result = CliRunner().invoke(cli, ["deploy", str(tmp_path), "--name", "doomed"])
    assert result.exit_code == 1
    assert "model 'fails_to_load' failed to load" in result.output
    assert "cannot open the model store from the server" in result.output
    assert state.load("doomed") is None
    assert owned_processes(mfn_home) == processes_before


def test_a_torchserve_worker_whose_setup_fails_reports_the_handlers_frames_and_exception_once(tmp_path):
    mfn.package(f"{HANDLERS / 'bad_outputs.py'}:FailsInATorchServeWorker", tmp_path, server="torchserve")
    result = CliRunner().invoke(cli, ["deploy", str(tmp_path), "--name", "doomed-ts"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    # TorchServe logs its own "RuntimeError: 500 - Unknown exception" after the handler's: the reason ends the message.
    assert lines[-1] == "RuntimeError: weights.bin is corrupt: download it again", result.output
    assert "  handler/bad_outputs.py, line" in result.output and "in open_weights" in result.output
    assert result.output.count("weights.bin is corrupt") == 2  # the raising line and the exception, nothing more
    assert "Unknown exception" not in result.output and "MODEL_LOG" not in result.output
    assert state.load("doomed-ts") is None


def test_a_running_name_is_not_taken_twice(small_repository):
    deployments.deploy(small_repository, name="twice", drain_timeout_s=0)
    try:
        with pytest.raises(DeployError, match="'twice' is already running"):
            deployments.deploy(small_repository, name="twice")
    finally:
        deployments.undeploy("twice")


def test_unknown_deployment_and_model_errors_name_what_exists(small_repository):
    result = CliRunner().invoke(cli, ["undeploy", "nobody"])
    assert result.exit_code == 1 and "no deployment named 'nobody'" in result.output
    result = CliRunner().invoke(cli, ["invoke", "ghost", "-d", "{}"])
    assert result.exit_code == 1 and "no running deployment serves model 'ghost'" in result.output
    result = CliRunner().invoke(cli, ["deploy", str(small_repository), "--model", "ghost"])
    assert result.exit_code == 1 and "models ['ghost'] are not in" in result.output


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_foreground_deploy_stops_cleanly_on_ctrl_c_and_sigterm(small_repository, stop):
    command = [sys.executable, "-m", "mfn.cli.main", "deploy", str(small_repository), "--name", "fg", "--foreground"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    try:

        def deployed_with_models() -> state.Deployment | None:
            assert process.poll() is None, process.communicate()
            deployed = state.load("fg")
            return deployed if deployed and deployed.models else None

        deployed = wait_for(deployed_with_models, 60, "the foreground deploy to record its models")
        assert deployed.models == ["text_stats"]
        with mfn.Client("fg") as client:
            assert client.infer("text_stats", {"text": ["x y"]})["n_words"].tolist() == [[2]]
        process.send_signal(stop)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    assert "deployed fg: text_stats" in stdout and "stopping fg" in stderr
    assert not pid_alive(deployed.pid)
    assert state.load("fg") is None


def test_an_interrupt_while_the_models_load_stops_everything_and_says_so(tmp_path):
    """Ctrl-C during loading, then a second one while the first is being handled: nothing is left running."""
    mfn.package(f"{HANDLERS / 'slow_setup.py'}:SlowSetup", tmp_path / "repo")
    command = [sys.executable, "-m", "mfn.cli.main", "deploy", str(tmp_path / "repo"), "--name", "interrupted"]
    env = {**os.environ, "MFN_TEST_SETUP_DELAY_S": "20"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:

        def recorded_deployment() -> state.Deployment | None:
            assert process.poll() is None, process.communicate()
            return state.load("interrupted")

        recorded = wait_for(recorded_deployment, 60, "the server to start", every_s=0.05)
        process.send_signal(signal.SIGINT)
        time.sleep(0.3)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode != 0
    assert "interrupted: stopping interrupted" in stderr, stderr
    assert state.load("interrupted") is None, "the interrupted deployment is still recorded"
    assert not pid_alive(recorded.pid), "its supervisor still runs"


@pytest.mark.parametrize("target", ["triton", "torchserve"])
def test_a_gpu_spec_is_refused_on_a_machine_without_a_gpu_by_both_servers(tmp_path, target):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the refusal cannot show here")
    mfn.package(TEXT_STATS, tmp_path / "models", server=target, instances=[{"kind": "gpu", "count": 1}])
    with pytest.raises(DeployError, match="load") as caught:
        deployments.deploy(tmp_path / "models", name=f"gpu-{target}")
    assert "GPU" in str(caught.value) or "gpu" in str(caught.value), caught.value
    first_line = str(caught.value).splitlines()[0]
    assert first_line.endswith("text_stats asks for GPU instances and this machine has no NVIDIA GPU: package it again "
                               "with `--instances cpu:1` (or declare mfn.Instances(kind=\"auto\"), which takes a GPU where "
                               "there is one)"), first_line
    assert state.load(f"gpu-{target}") is None
