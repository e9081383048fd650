"""Operator commands on running deployments of both real servers: versions and the default-version rule, load,
unload, reload, scale, describe, status, logs -f, fixed ports, the load timeout. Every test runs on both servers."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

import mfn
from mfn.cli.main import cli
from mfn.local import deployments, state
from mfn.errors import DeployError, InvokeError
from mfn.servers.process import free_ports
from tests.conftest import HANDLERS, wait_for
from tests.integration.conftest import TEXT_STATS

pytestmark = pytest.mark.integration
SERVERS = ["triton", "torchserve"]
VERSIONED = f"{HANDLERS / 'versioned.py'}:Versioned"
NAMES = {"triton": "ops", "torchserve": "ops-ts"}


def package_versions(output: Path, target: str) -> list[str]:
    """versioned v1..v3 under a policy serving the newest two, and text_stats beside it (not deployed at first)."""
    warnings = []
    for version in (1, 2, 3):
        result = mfn.package(VERSIONED, output, server=target, version=version, version_policy=mfn.VersionPolicy(latest=2))
        warnings += result.warnings
    mfn.package(TEXT_STATS, output, server=target)
    return warnings


@pytest.fixture(scope="module")
def packaged(tmp_path_factory) -> dict[str, tuple[Path, list[str]]]:
    packaged = {}
    for server in SERVERS:
        output = tmp_path_factory.mktemp(f"ops-{server}")
        packaged[server] = (output, package_versions(output, server))
    return packaged


@pytest.fixture(scope="module")
def fixed_ports() -> dict[str, dict[str, int]]:
    http, grpc, metrics, ts_http, ts_grpc, ts_metrics = free_ports(6)
    return {"triton": {"http": http, "grpc": grpc, "metrics": metrics},
            "torchserve": {"http": ts_http, "grpc": ts_grpc, "metrics": ts_metrics}}


@pytest.fixture(scope="module")
def served(packaged, fixed_ports) -> Iterator[dict[str, deployments.Deployment]]:
    deployed = {}
    try:
        for server in SERVERS:
            deployed[server] = deployments.deploy(packaged[server][0], name=NAMES[server], models=["versioned"],
                                            ports=fixed_ports[server], drain_timeout_s=0)
        yield deployed
    finally:
        for server in SERVERS:
            if state.load(NAMES[server]) is not None:
                deployments.undeploy(NAMES[server])


def run(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def served_by(name: str, version: int | None = None) -> int:
    with mfn.Client(name) as client:
        return int(client.infer("versioned", {"x": [[0]]}, version=version)["served_by"].item())


def described(name: str, model: str = "versioned") -> dict:
    return json.loads(run("describe", model, "--deployment", name, "--json"))


@pytest.mark.parametrize("server", SERVERS)
def test_packaging_says_which_versions_the_policy_will_not_serve(packaged, server):
    _, warnings = packaged[server]
    assert any("versioned v1 stays in" in warning and "will not be served" in warning for warning in warnings), warnings


@pytest.mark.parametrize("server", SERVERS)
def test_both_servers_serve_the_policys_versions_and_the_newest_answers_requests_without_one(served, server):
    name = NAMES[server]
    described_now = described(name)
    assert (described_now["versions"], described_now["default_version"], described_now["health"]) == ([2, 3], 3, "ready")
    assert (served_by(name), served_by(name, 2)) == (3, 2)
    with pytest.raises(InvokeError, match=r"v1 is packaged but not loaded .*`mfn load versioned --version 1` loads it"):
        served_by(name, 1)
    status = json.loads(run("status", "--json"))
    (entry,) = [entry for entry in status["local"] if entry["name"] == name]
    assert entry["versions"]["versioned"] == {"versions": [2, 3], "default_version": 3}


@pytest.mark.parametrize("server", SERVERS)
def test_deploy_listens_on_the_fixed_ports_it_was_given(served, fixed_ports, server):
    assert {port: served[server].ports[port] for port in ("http", "grpc", "metrics")} == fixed_ports[server]


@pytest.mark.parametrize("server", SERVERS)
def test_a_version_is_added_and_removed_without_a_redeploy(served, server):
    name = NAMES[server]
    loaded = json.loads(run("load", "versioned", "--version", "1", "--deployment", name, "--json"))
    assert loaded["versions"] == [1, 2, 3]
    assert (served_by(name, 1), served_by(name)) == (1, 3)
    assert json.loads(run("unload", "versioned", "--version", "1", "--deployment", name, "--json"))["versions"] == [2, 3]
    with pytest.raises(InvokeError):
        served_by(name, 1)
    assert served_by(name, 2) == 2


@pytest.mark.parametrize("server", SERVERS)
def test_a_model_is_loaded_into_and_unloaded_from_a_running_deployment(served, server):
    name = NAMES[server]
    run("load", "text_stats", "--deployment", name)
    with mfn.Client(name) as client:
        assert client.infer("text_stats", {"text": [["a b"]]})["n_words"].item() == 2
    assert "text_stats" in state.get(name).models
    run("unload", "text_stats", "--deployment", name)
    assert "text_stats" not in state.get(name).models
    with mfn.Client(name) as client, pytest.raises(InvokeError):
        client.infer("text_stats", {"text": [["a b"]]})


@pytest.mark.parametrize("server", SERVERS)
def test_scale_changes_the_instances_and_the_model_keeps_answering(served, server):
    name = NAMES[server]
    run("scale", "versioned", "2", "--deployment", name)
    instances = described(name)["instances"]
    assert instances == (["cpu:2"] if server == "triton" else ["workers:2 (v2)", "workers:2 (v3)"])
    assert served_by(name) == 3
    run("scale", "versioned", "1", "--deployment", name)


@pytest.mark.parametrize("server", SERVERS)
def test_reload_brings_the_model_back_with_its_versions(served, server):
    name = NAMES[server]
    assert json.loads(run("reload", "versioned", "--deployment", name, "--json"))["versions"] == [2, 3]
    assert served_by(name) == 3


@pytest.mark.parametrize("server", SERVERS)
def test_set_default_works_on_both_servers_and_survives_a_redeploy(served, packaged, fixed_ports, server):
    name = NAMES[server]
    run("set-default", "versioned", "2", "--deployment", name)
    assert served_by(name) == 2
    refused = CliRunner().invoke(cli, ["set-default", "versioned", "1", "--deployment", name])
    assert refused.exit_code != 0 and "v1: that version is packaged but not loaded (it serves v2, v3" in refused.output
    deployments.undeploy(name)
    served[server] = deployments.deploy(packaged[server][0], name=name, models=["versioned"], ports=fixed_ports[server],
                                        drain_timeout_s=0)
    assert (described(name)["default_version"], served_by(name)) == (2, 2)
    run("set-default", "versioned", "--newest", "--deployment", name)
    assert served_by(name) == 3


@pytest.mark.parametrize("server", SERVERS)
def test_logs_follow_prints_lines_as_the_server_writes_them(served, server):
    name = NAMES[server]
    command = [sys.executable, "-m", "mfn.cli.main", "logs", name, "-n", "1", "-f", "--json"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    try:
        assert json.loads(lines.get(timeout=30))["deployment"] == name  # the last line, then new ones
        run("load", "text_stats", "--deployment", name)
        seen = []

        def logged_the_load() -> bool:
            while not lines.empty():
                seen.append(json.loads(lines.get_nowait())["line"])
            return any("text_stats" in line for line in seen)

        wait_for(logged_the_load, 30, "`mfn logs -f` to print the server's lines about loading text_stats", every_s=0.2)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=10)
        process.stderr.close()
        run("unload", "text_stats", "--deployment", name)
    assert process.returncode == 0


@pytest.mark.parametrize("server", SERVERS)
def test_a_port_in_use_is_refused_by_name_before_anything_starts(packaged, server):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(DeployError, match=rf"http port {port} on 127.0.0.1 is not free"):
            deployments.deploy(packaged[server][0], name=f"taken-{server}", models=["versioned"], ports={"http": port})
    assert state.load(f"taken-{server}") is None


@pytest.mark.parametrize("server", SERVERS)
def test_a_load_past_the_load_timeout_fails_naming_it_and_leaves_nothing(tmp_path, server):
    mfn.package(f"{HANDLERS / 'slow_setup.py'}:SlowSetup", tmp_path / "out", server=server)
    command = [sys.executable, "-m", "mfn.cli.main", "deploy", str(tmp_path / "out"), "--name", f"slow-{server}",
               "--load-timeout", "2"]
    env = {**os.environ, "MFN_TEST_SETUP_DELAY_S": "15"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode != 0
    assert "slow_setup did not finish loading within 2 s (--load-timeout)" in result.stderr, result.stderr
    assert state.load(f"slow-{server}") is None


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("server", SERVERS)
def test_a_url_target_without_its_key_or_with_the_wrong_server_says_what_to_pass(served, server, protocol):
    deployment = served[server]
    address = deployment.http_url if protocol == "http" else f"grpc://{deployment.grpc_url}"
    with mfn.Client(address, server=server) as client, pytest.raises(InvokeError, match=r"pass --token KEY or set \$MFN_TOKEN"):
        client.infer("versioned", {"x": [[0]]})
    if server == "torchserve":
        with mfn.Client(address) as client, pytest.raises(InvokeError, match="for TorchServe pass --server torchserve"):
            client.infer("versioned", {"x": [[0]]})


@pytest.mark.parametrize("server", SERVERS)
def test_deploy_records_where_each_models_cold_start_went(served, server):
    from mfn.runtime.cold_start import PHASES

    recorded = state.get(NAMES[server]).cold_start
    assert recorded["server_start_s"] > 0
    split = recorded["models"]["versioned"]
    assert set(split) == {"load_s", "server_s", *PHASES}
    assert all(value >= 0 for value in split.values())
    # The adapter's phases happen inside the supervisor's load call; the server's share is the rest.
    assert sum(split[phase] for phase in PHASES) <= split["load_s"] + 0.01
    assert split["server_s"] == pytest.approx(split["load_s"] - sum(split[phase] for phase in PHASES), abs=0.01)


def test_a_torchserve_model_named_token_something_is_served_and_its_limits_are_named(served, packaged):
    """TorchServe 0.12 reads management paths under /models/token... as its token API and refuses them."""
    store = packaged["torchserve"][0]
    result = mfn.package(TEXT_STATS, store, server="torchserve", name="tokenizer")
    assert any("TorchServe 0.12 takes management calls on /models/token..." in warning for warning in result.warnings)
    run("load", "tokenizer", "--deployment", NAMES["torchserve"])
    try:
        with mfn.Client(NAMES["torchserve"]) as client:
            assert client.infer("tokenizer", {"text": [["a b"]]})["n_words"].item() == 2
        refused = CliRunner().invoke(cli, ["scale", "tokenizer", "2", "--deployment", NAMES["torchserve"]])
        assert refused.exit_code != 0 and "package it under another name" in refused.output
    finally:
        (store / "tokenizer.mar").unlink()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("server", SERVERS)
def test_a_mistyped_model_gets_the_served_models_and_the_closest(served, server, protocol):
    deployment = served[server]
    with mfn.Client(NAMES[server], protocol=protocol) as client, pytest.raises(InvokeError) as caught:
        client.infer("versiond", {"x": [[0]]})
    assert "served models: " in str(caught.value) and "did you mean 'versioned'?)" in str(caught.value)
    result = CliRunner().invoke(cli, ["invoke", "versiond", "--deployment", NAMES[server], "--protocol", protocol,
                                      "--data", '{"x": [[0]]}'])
    assert result.exit_code == 1 and "did you mean 'versioned'?" in result.output, result.output
    if server == "triton":  # at a URL, Triton's repository index lists them, for its management key only
        address = deployment.http_url if protocol == "http" else f"grpc://{deployment.grpc_url}"
        with (mfn.Client(address, token=state.read_key(deployment, "inference")) as client,
              pytest.raises(InvokeError, match=r"no model 'versiond' there; Triton lists its models at POST /v2/repository")):
            client.infer("versiond", {"x": [[0]]})


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_torchserve_spoken_to_a_triton_url_says_to_pass_server_triton(served, protocol):
    deployment = served["triton"]
    address = deployment.http_url if protocol == "http" else f"grpc://{deployment.grpc_url}"
    with (mfn.Client(address, server="torchserve", token=state.read_key(deployment, "inference")) as client,
          pytest.raises(InvokeError, match=r"answers like Triton \(KServe v2\), not TorchServe: pass --server triton")):
        client.infer("versioned", {"x": [[0]]})


@pytest.mark.parametrize("server", SERVERS)
def test_invoke_json_says_which_version_answered(served, server):
    asked = json.loads(run("invoke", "versioned", "--deployment", NAMES[server], "--version", "2", "--data", '{"x": [[0]]}',
                           "--json"))
    assert asked["version"] == 2 and asked["outputs"]["served_by"] == [[2]]
    chosen = json.loads(run("invoke", "versioned", "--deployment", NAMES[server], "--data", '{"x": [[0]]}', "--json"))
    assert isinstance(chosen["version"], int) and chosen["outputs"]["served_by"] == [[chosen["version"]]]
