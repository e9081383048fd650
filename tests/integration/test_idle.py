"""`--idle-timeout`: an idle deployment's server stops, and the next request over HTTP or gRPC wakes it and is
answered, on both servers, through mfn.Client, `mfn invoke` and stock clients."""

from __future__ import annotations

import json
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import mfn
from mfn.cli.main import cli
from mfn.local import deployments, state
from mfn.local.supervision import read_status
from mfn.servers.http import request
from mfn.servers.process import is_running
from tests.conftest import scrape, wait_for
from tests.integration.conftest import TEXT_STATS

pytestmark = pytest.mark.integration
IDLE_S = 1.5


@pytest.fixture(scope="module", params=["triton", "torchserve"])
def idling(request, tmp_path_factory):
    server = request.param
    repository = tmp_path_factory.mktemp(f"idle-{server}")
    mfn.package(TEXT_STATS, repository, server=server)
    name = f"idle-{server}"
    # Triton's inference open, so a stock client reads no key: served through mfn's guarding proxy, which sends to the
    # front. TorchServe's stays keyed: its open inference would go through the proxy, and requests held while it sleeps
    # would carry the key it had before (it makes new ones at every start; mfn.Client reads the new one itself).
    deployment = deployments.deploy(repository, name=name, auth=server != "triton", idle_timeout_s=IDLE_S,
                                    drain_timeout_s=0)
    yield server, deployment
    deployments.undeploy(name)


def asleep(deployment: state.Deployment, timeout_s: float = 30.0) -> state.Deployment:
    """Wait for the supervisor to stop the idle server; the status it wrote then."""
    return wait_for(lambda: (status := read_status(deployment)).state == "idle" and status, timeout_s,
                    f"{deployment.name}'s supervisor to stop its idle server", every_s=0.2)


def stock_http(deployment: state.Deployment, text: str) -> dict:
    """A stock HTTP client's request to Triton, with no key."""
    body = {"inputs": [{"name": "text", "shape": [1, 1], "datatype": "BYTES", "data": [text]}]}
    call = urllib.request.Request(f"http://127.0.0.1:{deployment.public_port('http')}/v2/models/text_stats/infer",
                                  data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(call, timeout=120) as response:
        return json.load(response)


def n_words(answer: dict) -> int:
    """The n_words output of a KServe v2 answer."""
    return next(output["data"][0] for output in answer["outputs"] if output["name"] == "n_words")


def test_the_front_owns_the_public_ports_and_the_server_stops_when_idle(idling):
    server, deployment = idling
    assert set(deployment.front) == {"http", "grpc"}
    assert deployment.front["http"] != deployment.ports["http"] and deployment.front["grpc"] != deployment.ports["grpc"]
    # Open inference (Triton here) is guarded by the proxy, which sends to the front; keyed, clients reach the front.
    assert bool(deployment.proxy) == (server == "triton")
    assert deployment.endpoints()["http"].endswith(f":{deployment.proxy.get('http') or deployment.front['http']}")
    status = asleep(deployment)
    assert status.server_pid is None
    listed = CliRunner().invoke(cli, ["status"])
    assert f"{deployment.name} ({server}, supervisor pid {deployment.pid}, idle" in listed.output
    assert read_status(deployment).state == "idle"  # `mfn status` does not wake it


@pytest.mark.parametrize("idling", ["triton"], indirect=True)  # stock clients send no key
def test_a_stock_http_request_wakes_the_server_and_is_answered(idling):
    server, deployment = idling
    before = asleep(deployment)
    started = time.monotonic()
    assert n_words(stock_http(deployment, "wake up now")) == 3
    held_s = time.monotonic() - started
    after = read_status(deployment)
    assert after.state == "running" and after.wakes == before.wakes + 1
    assert after.server_pid is not None and is_running(after.server_pid, after.server_start_time)
    assert 0 < after.last_wake_s <= held_s


def test_a_grpc_call_through_mfn_client_wakes_it_and_a_kept_http_connection_is_reattached(idling):
    """Both clients are made, and answered, before the first stop: on TorchServe (keyed here) each holds a key from
    before it, which the restarted server has replaced."""
    server, deployment = idling
    with (mfn.Client(deployment.name, protocol="http") as kept,
          mfn.Client(deployment.name, protocol="grpc", retries=0) as client):
        assert kept.infer("text_stats", {"text": [["one two"]]})["n_words"].tolist() == [[2]]
        assert client.infer("text_stats", {"text": [["one"]]})["n_words"].tolist() == [[1]]
        before = asleep(deployment)
        assert client.infer("text_stats", {"text": [["a b c d"]]})["n_words"].tolist() == [[4]]
        assert read_status(deployment).wakes == before.wakes + 1
        before = asleep(deployment)
        # The same client, its HTTP connection kept open across the stop: the request wakes the server.
        assert kept.infer("text_stats", {"text": [["x"]]})["n_words"].tolist() == [[1]]
        assert read_status(deployment).wakes == before.wakes + 1


def test_requests_arriving_together_while_idle_are_all_answered_after_one_wake(idling):
    server, deployment = idling
    before = asleep(deployment)

    def call(index: int) -> int:
        if index % 3 == 0 and server == "triton":  # stock clients send no key
            return n_words(stock_http(deployment, " ".join(["w"] * index)))
        with mfn.Client(deployment.name, protocol="grpc" if index % 3 == 1 else "http", retries=0, timeout_s=120) as client:
            return int(client.infer("text_stats", {"text": [[" ".join(["w"] * index)]]})["n_words"][0][0])

    with ThreadPoolExecutor(9) as pool:
        answers = list(pool.map(call, range(1, 10)))
    assert answers == list(range(1, 10))
    assert read_status(deployment).wakes == before.wakes + 1


def metric_names(deployment: state.Deployment) -> dict[str, float] | None:
    """Each sample name on the metrics port with its value summed over labels; None while the port does not answer."""
    try:
        samples = scrape(deployment.metrics_url)
    except OSError:
        return None
    totals: dict[str, float] = {}
    for name, _, value in samples:
        totals[name] = totals.get(name, 0.0) + value
    return totals


def requests_counted(name: str) -> int:
    result = CliRunner().invoke(cli, ["stats", name, "--json"])
    assert result.exit_code == 0, result.output
    return sum(row["requests"] for row in json.loads(result.output) if row["model"] == "text_stats")


def test_asleep_it_still_answers_its_metrics_port_and_stats_keep_counting_across_wakes(idling):
    """Prometheus finds an asleep deployment up (MfnTargetDown stays quiet), and `mfn stats` its whole history."""
    _, deployment = idling
    asleep(deployment)
    with mfn.Client(deployment.name, protocol="http", retries=0, timeout_s=120) as client:
        for text in ("one", "two words", "three more words"):
            client.infer("text_stats", {"text": [[text]]})
    status = asleep(deployment)
    page = wait_for(lambda: (totals := metric_names(deployment)) and totals.get("mfn_asleep") == 1 and totals, 30,
                    "the metrics port answering while asleep")
    assert "mfn_requests_total" in page  # the last scrape's counters, not an empty page
    counted = requests_counted(deployment.name)
    assert counted >= 3
    assert read_status(deployment).state == "idle"  # neither the scrape nor the stats woke it
    with mfn.Client(deployment.name, protocol="http", retries=0, timeout_s=120) as client:
        assert client.infer("text_stats", {"text": [["awake again"]]})["n_words"].tolist() == [[2]]
    assert read_status(deployment).wakes == status.wakes + 1
    # The woken server counts from zero; the stats add the runs before the wake.
    wait_for(lambda: requests_counted(deployment.name) == counted + 1, 30, "the stats counting the request after the wake")
    assert "no requests yet" not in CliRunner().invoke(cli, ["stats", deployment.name]).output


def test_mfn_invoke_over_grpc_wakes_it(idling):
    _, deployment = idling
    asleep(deployment)
    result = CliRunner().invoke(cli, ["invoke", "text_stats", "--deployment", deployment.name, "--protocol", "grpc",
                                      "-d", '{"text": ["p q"]}', "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["outputs"]["n_words"] == [[2]]


@pytest.mark.parametrize("idling", ["triton"], indirect=True)  # stock clients send no key
def test_a_stock_grpc_client_wakes_it(idling):
    _, deployment = idling
    asleep(deployment)
    import tritonclient.grpc as grpc_client

    client = grpc_client.InferenceServerClient(f"127.0.0.1:{deployment.public_port('grpc')}")
    try:
        text = grpc_client.InferInput("text", [1, 1], "BYTES")
        text.set_data_from_numpy(np.array([[b"stock grpc call"]], dtype=object))
        assert client.infer("text_stats", [text]).as_numpy("n_words").tolist() == [[3]]
    finally:
        client.close()


@pytest.mark.parametrize("idling", ["triton"], indirect=True)  # open inference
def test_a_body_that_crashes_tritonserver_is_refused_by_the_guard_without_waking_it(idling):
    server, deployment = idling
    before = asleep(deployment)
    hostile = b'{"inputs":[{"name":"text","shape":[1000000000000,1],"datatype":"BYTES","data":["x"]}]}'
    status, answer = request("POST", f"{deployments.public_url(deployment.name)}/v2/models/text_stats/infer", 30, hostile)
    assert status == 400 and "refused by mfn's guard" in answer, (status, answer)
    after = read_status(deployment)
    assert after.state == "idle" and after.wakes == before.wakes
    assert n_words(stock_http(deployment, "still served")) == 2


def test_undeploy_of_an_idle_deployment_leaves_nothing(tmp_path):
    mfn.package(TEXT_STATS, tmp_path, server="triton")
    deployment = deployments.deploy(tmp_path, name="idle-undeploy", idle_timeout_s=IDLE_S, drain_timeout_s=0)
    asleep(deployment)
    undeployed = CliRunner().invoke(cli, ["undeploy", "idle-undeploy", "--json"])
    assert undeployed.exit_code == 0 and json.loads(undeployed.output) == {"stopped": ["idle-undeploy"]}, undeployed.output
    assert not is_running(deployment.pid, deployment.start_time)
    assert not Path(deployment.workdir).exists()


# TorchServe's idling deployment above is keyed, and its kept clients are checked there.
@pytest.mark.parametrize("server", ["triton"])
def test_clients_holding_a_key_from_before_the_stop_are_answered_after_the_wake(server, tmp_path):
    """Inference behind a key (a server may make a new one when it starts again; mfn.Client reads it)."""
    mfn.package(TEXT_STATS, tmp_path, server=server)
    name = f"idle-keyed-{server}"
    deployment = deployments.deploy(tmp_path, name=name, idle_timeout_s=IDLE_S, drain_timeout_s=0)
    try:
        clients = {protocol: mfn.Client(name, protocol=protocol, retries=0, timeout_s=120) for protocol in ("http", "grpc")}
        for client in clients.values():
            assert client.infer("text_stats", {"text": [["before the stop"]]})["n_words"][0][0] == 3
        for protocol, client in clients.items():
            asleep(deployment)
            answer = client.infer("text_stats", {"text": [[f"woken over {protocol}"]]})
            assert answer["n_words"][0][0] == 3, protocol
            client.close()
        assert read_status(deployment).wakes == 2
    finally:
        deployments.undeploy(name)
