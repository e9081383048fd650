"""Tensors on the wire, on both real servers: binary tensor data, JSON, full batches, body limits, batch delay, warm-up."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import mfn
from mfn.local import deployments
from mfn.local.launching import http_json
from mfn.servers.torchserve.admin import management_url, read_key
from mfn.client.retry import retryable
from mfn.errors import CallError, InvokeError
from mfn.runtime.codec.binary import HEADER_LENGTH
from mfn.runtime.codec.client import encode_binary_request, read_binary_answer
from mfn.runtime.codec.limits import MIB
from mfn.runtime.metric_batching import FLUSH_INTERVAL_S
from tests.conftest import HANDLERS, scrape, settled, wait_for
from tests.integration.test_triton import in_process

pytestmark = pytest.mark.integration
IMAGES = f"{HANDLERS / 'images.py'}:Images"
MIXED = f"{HANDLERS / 'mixed.py'}:Mixed"
SERVERS = ["triton", "torchserve"]
PROTOCOLS = ["http", "grpc"]
# Large enough that its declared full batch would not fit the default limit: the server must be raised for it.
WIDE_REQUEST_MB = 100


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, deployments.Deployment]]:
    repository, store = tmp_path_factory.mktemp("transport-repo"), tmp_path_factory.mktemp("transport-store")
    for ref in (IMAGES, MIXED):
        mfn.package(ref, repository)
        mfn.package(ref, store, server="torchserve")
    # Called by one test only, so its first request is the first after warm-up.
    mfn.package(IMAGES, repository, name="warm")
    mfn.package(IMAGES, store, server="torchserve", name="warm")
    mfn.package(MIXED, store, server="torchserve", name="wide", max_request_mb=WIDE_REQUEST_MB)
    deployed = {"triton": deployments.deploy(repository, name="transport", drain_timeout_s=0),
                "torchserve": deployments.deploy(store, name="transport-ts", drain_timeout_s=0)}
    yield deployed
    for deployment in deployed.values():
        deployments.undeploy(deployment.name)


def images(rows: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, 3, 224, 224)).astype(np.float32)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("server", SERVERS)
def test_a_full_batch_of_images_in_one_request_matches_in_process(served, server, protocol):
    batch = images(8)
    expected = in_process(IMAGES, {"image": batch})["logits"]
    with mfn.Client(served[server].name, protocol=protocol) as client:
        served = client.infer("images", {"image": batch})
    assert served["logits"].dtype == np.float32 and served["logits"].shape == (8, 1000)
    np.testing.assert_allclose(served["logits"], expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("server", SERVERS)
def test_binary_and_json_tensors_give_identical_answers(served, server, protocol):
    inputs = {"text": [["one"], ["\u00fcber"], [""]], "x": [[1.5, -2.0], [0.25, 1e-3], [3.0, 4.0]], "level": [[1], [2], [255]]}
    name = served[server].name
    with mfn.Client(name, protocol=protocol) as binary, mfn.Client(name, protocol=protocol, binary=False) as text:
        answers = [binary.infer("mixed", inputs), text.infer("mixed", inputs)]
        image_answers = [binary.infer("images", {"image": images(2, seed=3)}), text.infer("images", {"image": images(2, seed=3)})]
    for by_binary, by_json in (answers, image_answers):
        assert by_binary.keys() == by_json.keys()
        for output in by_binary.keys() - {"calls"}:  # calls counts this instance's predicts
            np.testing.assert_array_equal(by_binary[output], by_json[output])
    assert answers[0]["echo"].ravel().tolist() == [b"one", "\u00fcber".encode(), b""]


def torchserve_post(deployment: deployments.Deployment, model: str, body: bytes, headers: dict[str, str]) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection(deployment.host, deployment.ports["http"], timeout=60)
    headers = {**headers, "Authorization": f"Bearer {read_key(deployment, 'inference')}"}
    connection.request("POST", f"/predictions/{model}", body=body, headers=headers)
    return connection.getresponse()


def test_torchserve_answers_a_curl_style_binary_body_in_binary_and_a_json_body_in_json(served):
    deployment = served["torchserve"]
    batch = images(3, seed=5)
    body, header_length = encode_binary_request({"image": batch})
    # Header names are case-insensitive: a hand-written request may spell it in lower case.
    reply = torchserve_post(deployment, "images", body, {"Content-Type": "application/octet-stream",
                                                         HEADER_LENGTH.lower(): str(header_length)})
    answer = reply.read()
    assert reply.status == 200, answer[:200]
    assert reply.getheader("Content-Type") == "application/octet-stream"
    length = int(reply.getheader(HEADER_LENGTH))
    header = json.loads(answer[:length])
    assert [entry["parameters"]["binary_data_size"] for entry in header["outputs"]] == [3 * 1000 * 4, 3 * 8]
    expected = in_process(IMAGES, {"image": batch})["logits"]
    np.testing.assert_allclose(read_binary_answer(answer, length)["logits"], expected, rtol=1e-6, atol=1e-6)

    plain = torchserve_post(deployment, "images", json.dumps({"image": batch[:1].tolist()}).encode(),
                            {"Content-Type": "application/json"})
    document = json.loads(plain.read())
    assert plain.status == 200 and plain.getheader(HEADER_LENGTH) is None
    np.testing.assert_allclose(document["logits"], expected[:1], rtol=1e-6, atol=1e-6)

    # curl's default Content-Type for -d is a form, which TorchServe parses into fields: the model gets no body.
    form = torchserve_post(deployment, "images", b'{"image": [[1]]}', {"Content-Type": "application/x-www-form-urlencoded"})
    assert form.status == 400 and "send Content-Type: application/json" in json.loads(form.read())["error"]


@pytest.mark.parametrize("body, message", [
    (b'{"inputs":[{"name":"image","shape":[1,3,224,224],"datatype":"FP32","parameters":{"binary_data_size":16}}]}' + bytes(16),
     "16 bytes of FP32 data, but shape [1, 3, 224, 224] needs 602,112"),
    (b'{"inputs":[{"name":"image","shape":[1,3,224,224],"datatype":"FP32","parameters":{"binary_data_size":999999}}]}',
     "runs past the end of the body"),
])
def test_torchserve_refuses_inconsistent_binary_bodies_with_400(served, body, message):
    header_length = body.index(b"}]}") + 3
    reply = torchserve_post(served["torchserve"], "images", body, {HEADER_LENGTH: str(header_length)})
    assert reply.status == 400
    assert message in json.loads(reply.read())["error"]


def test_torchserve_limits_follow_the_spec_and_an_oversized_request_is_refused_without_retries(served):
    deployment = served["torchserve"]
    config = (Path(deployment.workdir) / "config.properties").read_text()
    limit = WIDE_REQUEST_MB * MIB  # the largest any of its models needs: `wide` declares it
    assert f"max_request_size={limit}\n" in config and f"max_response_size={limit}\n" in config
    assert deployment.max_request_bytes == limit

    rows = limit // (3 * 224 * 224 * 4) + 1
    oversized = {"image": np.zeros((rows, 3, 224, 224), dtype=np.float32)}
    for protocol in PROTOCOLS:
        with mfn.Client(deployment.name, protocol=protocol) as client:
            with pytest.raises(InvokeError) as refused:
                client.infer("images", oversized)
        text = str(refused.value)
        assert f"exceeds the deployment's limit of {limit:,}" in text and "--max-request-mb" in text
        assert "attempts" not in text

    # Past the client, the server itself refuses it: 413 over REST, a cancelled call over gRPC (grpc-java resets
    # the stream); neither is retried, and both name the limit.
    from mfn.client import torchserve_wire as torchserve_client
    from mfn.local.state import mfn_home

    body = torchserve_client.request_body(oversized)
    token = read_key(deployment, "inference")
    rest = torchserve_client.RestConnections(f"{deployment.host}:{deployment.ports['http']}", 60)
    channel = torchserve_client.GrpcChannel(f"{deployment.host}:{deployment.ports['grpc']}", mfn_home() / "cache")
    refusals = []
    try:
        for call in (lambda: rest.infer("images", body, None, token), lambda: channel.infer("images", body, None, token, 60)):
            with pytest.raises(CallError) as refused:
                call()
            refusals.append(refused.value)
    finally:
        rest.close()
        channel.close()
    assert [refusal.status for refusal in refusals] == ["413", "CANCELLED"]
    for refusal in refusals:
        assert "max_request_size" in str(refusal) and not retryable(refusal)


def test_torchserve_batch_delay_is_what_mfn_meant(served):
    deployment = served["torchserve"]
    code, described = http_json("GET", f"{management_url(deployment)}/models/images", 30, read_key(deployment, "management"))
    assert code == 200
    (model,) = described
    # The handler declares no delay (0): TorchServe would read 0 as "unset" and wait 100 ms; mfn asks for its 1 ms floor.
    assert (model["batchSize"], model["maxBatchDelay"]) == (8, 1)


def model_series(deployment, model: str) -> dict[tuple[str, str], float]:
    """(sample name, outcome or le) -> value of mfn's series for `model` on the server's metrics port."""
    return {(name, labels.get("outcome") or labels.get("le", "")): value for name, labels, value in scrape(deployment.metrics_url)
            if name.startswith("mfn_") and labels.get("model") == model}


@pytest.mark.parametrize("server", SERVERS)
def test_outcome_series_start_at_zero_and_warm_up_is_not_traffic_on_both_servers(served, server):
    """`warm` ran three warm-up requests before it was ready, and no client has called it yet (see the next test)."""
    series = wait_for(lambda: model_series(served[server], "warm"), 5 * FLUSH_INTERVAL_S, "warm's series", every_s=0.2)
    requests = {outcome: value for (name, outcome), value in series.items() if name.startswith("mfn_requests_total")}
    assert requests == {"success": 0.0, "invalid": 0.0, "error": 0.0}
    assert not any(name.startswith(("mfn_batch_size", "mfn_predict_duration_seconds")) and value
                   for (name, _), value in series.items())


@pytest.mark.parametrize("server", SERVERS)
def test_warm_up_runs_before_the_first_request_on_both_servers(served, server):
    with mfn.Client(served[server].name) as client:
        first = client.infer("warm", {"image": images(1)})
    assert first["calls"].ravel().tolist() == [4]  # three warm-up calls (Images.warmup.count), then this one



def settled_size(log: Path) -> int:
    """The log's size once a metric flush interval has passed without it growing."""
    return settled(lambda: log.stat().st_size, FLUSH_INTERVAL_S * 1.5, f"{log.name}'s size")


def test_torchserve_logs_nothing_per_request_and_sizes_its_heap_for_the_limit(served):
    deployment = served["torchserve"]
    config = (Path(deployment.workdir) / "config.properties").read_text()
    (vmargs,) = [line for line in config.splitlines() if line.startswith("vmargs=")]
    assert vmargs.startswith("vmargs=-Xmx1024m -XX:+ExitOnOutOfMemoryError")  # the floor: 4 x 100 MiB + 256 MiB is less
    log = Path(deployment.log_file)
    with mfn.Client(deployment.name) as client:
        client.infer("mixed", {"text": [["warm"]], "x": [[1, 2]], "level": [[1]]})
        before = settled_size(log)  # the worker's metric flush that follows is not per request either
        for _ in range(100):
            client.infer("mixed", {"text": [["a"]], "x": [[1, 2]], "level": [[1]]})
        settled_size(log)
    # TorchServe's default logging wrote ~1 KB per request; what is left is per flush, not per request.
    assert log.stat().st_size - before < 2048, log.read_text()[before:][-2000:]


@pytest.mark.parametrize("server", SERVERS)
def test_one_client_may_be_shared_by_threads_on_every_protocol(served, server):
    from concurrent.futures import ThreadPoolExecutor

    batch = images(1, seed=9)
    expected = in_process(IMAGES, {"image": batch})["logits"]
    for protocol in PROTOCOLS:
        with mfn.Client(served[server].name, protocol=protocol) as client:
            # Two pools one after the other: new threads must not pick up connections of threads that ended.
            for _ in range(2):
                with ThreadPoolExecutor(4) as pool:
                    answers = list(pool.map(lambda _: client.infer("images", {"image": batch})["logits"], range(8)))
                for answer in answers:
                    np.testing.assert_allclose(answer, expected, rtol=1e-6, atol=1e-6)
