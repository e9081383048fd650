"""Malformed requests on real servers: each is refused alone, says what to send, and the server keeps serving.

TorchServe runs mfn's codec; Triton parses its own JSON, so its answers are recorded here as Triton
2.51 gives them (mostly 500). Bodies sent to Triton nest at most 100 levels: deeper ones crash it.
Shapes whose element counts overflow 64 bits go to both servers as binary tensor data, over HTTP and gRPC.
"""

from __future__ import annotations

import json
import random
import socket
import struct
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pytest
from click.testing import CliRunner

import mfn
from mfn.cli.main import cli
from mfn.client.retry import retryable
from mfn.client.triton import GRPC_AUTH_HEADER
from mfn.errors import MfnError
from mfn.local import deployments
from mfn.local.supervision import read_status
from mfn.servers.torchserve.admin import management_url, read_key
from mfn.errors import CallError, InvokeError
from mfn.runtime.codec.binary import HEADER_LENGTH, OCTET_STREAM
from mfn.runtime.codec.limits import MAX_BYTES_ELEMENT, nesting_depth
from mfn.runtime.metric_batching import FLUSH_INTERVAL_S
from tests.conftest import HANDLERS, scrape, settled, wait_for

pytestmark = pytest.mark.integration
MIXED = f"{HANDLERS / 'mixed.py'}:Mixed"
TRITON_MAX_DEPTH = 100
GOOD = {"inputs": [
    {"name": "text", "shape": [1, 1], "datatype": "BYTES", "data": ["hi"]},
    {"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1.5, 2]},
    {"name": "level", "shape": [1, 1], "datatype": "UINT8", "data": [3]},
]}
GOOD_VALUES = {"text": [["hi"]], "x": [[1.5, 2.0]], "level": [[3]]}


def changed(name: str, **fields) -> bytes:
    """GOOD with fields of one input changed (None removes the field)."""
    body = json.loads(json.dumps(GOOD))
    for entry in body["inputs"]:
        if entry["name"] == name:
            for key, value in fields.items():
                if value is None:
                    entry.pop(key)
                else:
                    entry[key] = value
    return json.dumps(body).encode()


def nested(depth: int) -> bytes:
    return b'{"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": ' + b"[" * depth + b"1" + b"]" * depth + b"}]}"


@dataclass(frozen=True)
class Case:
    """A malformed body, what mfn's codec says about it, and the status Triton 2.51 answers (None: not sent)."""

    id: str
    body: bytes
    message: str
    triton: int | None


CASES = [
    Case("int-for-bytes", changed("text", data=[200000000]), "input 'text' expects BYTES (text), got a number (200000000)", 500),
    Case("negative-for-bytes", changed("text", data=[-1]), "input 'text' expects BYTES (text), got a number (-1)", 500),
    Case("null-for-bytes", changed("text", data=[None]), "input 'text' expects BYTES (text), got null", 500),
    Case("object-for-bytes", changed("text", data=[{}]), "input 'text' expects BYTES (text), got an object", 500),
    Case("text-for-fp32", changed("x", data=["a", "b"]), "input 'x' expects FP32 numbers, got text", 500),
    Case("bools-for-fp32", changed("x", data=[True, False]), "input 'x' expects FP32 numbers, got true/false", 500),
    Case("ragged-v2", changed("x", shape=[2, 2], data=[[1, 2], [3]]), "input 'x' has rows of different lengths", 500),
    Case("ragged-plain", b'{"text": [["a"], ["b"]], "x": [[1, 2], [3]], "level": [[1], [2]]}',
         "input 'x' has rows of different lengths", 500),
    Case("no-shape", changed("x", shape=None), "input 'x' needs \"shape\"", 500),
    Case("data-not-a-list", changed("x", data=5), "input 'x' needs \"data\", a list of values", 500),
    Case("datatype-mismatch", changed("x", datatype="INT32", data=[1, 2]), "input 'x' has datatype INT32, but the model declares FP32", 400),
    Case("nan-for-uint8", b'{"inputs": [{"name": "level", "shape": [1, 1], "datatype": "UINT8", "data": [NaN]}]}',
         "input 'level' expects UINT8 integers, got numbers with a fraction, NaN or Infinity", 500),
    Case("300-for-uint8", changed("level", data=[300]), "input 'level' expects UINT8 integers from 0 to 255, got 300", 200),
    Case("nested-90", nested(90), "request body nests 93 levels deep, more than the 7 its tensors need", 500),
    Case("nested-5000", nested(5_000), "request body nests 5003 levels deep", None),
    Case("nested-100000", nested(100_000), "request body nests 100003 levels deep", None),
    Case("not-json", b"{not json", "request body is not JSON", 500),
    Case("not-utf8", b'{"x": "\xff"}', "request body is not JSON", 500),
    Case("json-list", b"[1, 2]", "request body must be a JSON object", 500),
    Case("unknown-input", b'{"nope": [[1]]}', "unknown input 'nope': mixed takes ['level', 'text', 'x']", 500),
]
IDS = [case.id for case in CASES]


@pytest.fixture(scope="module")
def torchserve(tmp_path_factory: pytest.TempPathFactory):
    store = tmp_path_factory.mktemp("malformed-store")
    # A queue delay long enough that concurrent requests share batches.
    mfn.package(MIXED, store, server="torchserve", batching={"max_batch_size": 8, "max_queue_delay_us": 20_000})
    yield deployments.deploy(store, name="malformed-ts", drain_timeout_s=0)
    deployments.undeploy("malformed-ts")


@pytest.fixture(scope="module")
def triton(tmp_path_factory: pytest.TempPathFactory):
    repository = tmp_path_factory.mktemp("malformed-repository")
    mfn.package(MIXED, repository)
    yield deployments.deploy(repository, name="malformed-tr", drain_timeout_s=0)
    deployments.undeploy("malformed-tr")


def post(url: str, body: bytes, token: str | None = None, header_length: int | None = None) -> tuple[int, str]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    if header_length is not None:
        headers.update({"Content-Type": OCTET_STREAM, HEADER_LENGTH: str(header_length)})
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body, headers=headers), timeout=30) as reply:
            return reply.status, reply.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode("utf-8", "replace")


def torchserve_post(deployment, body: bytes, header_length: int | None = None) -> tuple[int, str]:
    return post(f"{deployment.http_url}/predictions/mixed", body, read_key(deployment, "inference"), header_length)


def triton_post(deployment, body: bytes, header_length: int | None = None) -> tuple[int, str]:
    return post(f"{deployment.http_url}/v2/models/mixed/infer", body, read_key(deployment, "inference"), header_length)


def assert_answers_good_requests(status_and_text: tuple[int, str]) -> None:
    status, text = status_and_text
    assert status == 200, text
    outputs = {output["name"]: output["data"] for output in json.loads(text)["outputs"]}
    assert outputs == {"echo": ["hi"], "total": [10.5]}


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_torchserve_rest_refuses_each_malformed_body_with_400_and_keeps_serving(torchserve, case):
    status, text = torchserve_post(torchserve, case.body)
    assert status == 400, text
    assert case.message in json.loads(text)["error"]
    assert_answers_good_requests(torchserve_post(torchserve, json.dumps(GOOD).encode()))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_torchserve_grpc_refuses_each_malformed_body_and_keeps_serving(torchserve, case):
    from mfn.client import torchserve_wire as torchserve_client
    from mfn.local.state import mfn_home

    channel = torchserve_client.GrpcChannel(f"{torchserve.host}:{torchserve.ports['grpc']}", mfn_home() / "cache")
    token = read_key(torchserve, "inference")
    try:
        # TorchServe's gRPC API carries no per-request status: the refusal is the answer's body.
        answer = channel.infer("mixed", torchserve_client.Body(case.body), None, token, 30)
        assert case.message in json.loads(answer)["error"]
        good = channel.infer("mixed", torchserve_client.Body(json.dumps(GOOD).encode()), None, token, 30)
    finally:
        channel.close()
    assert_answers_good_requests((200, good.decode()))


@pytest.mark.parametrize("case", [case for case in CASES if case.triton is not None], ids=lambda case: case.id)
def test_triton_http_answers_what_it_answers_and_keeps_serving(triton, case):
    assert nesting_depth(case.body, TRITON_MAX_DEPTH) <= TRITON_MAX_DEPTH
    status, text = triton_post(triton, case.body)
    # Triton 2.51 answers most malformed JSON with 500 and wraps 300 into a UINT8; 400 is what it should say.
    assert status in (case.triton, 400), text
    if status != 200:
        assert json.loads(text)["error"]
    assert_answers_good_requests(triton_post(triton, json.dumps(GOOD).encode()))


def test_malformed_requests_fail_alone_while_their_batch_neighbours_are_answered(torchserve):
    bodies = [json.dumps(GOOD).encode() if index % 2 else CASES[index % len(CASES)].body for index in range(48)]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda body: torchserve_post(torchserve, body), bodies))
    for index, answer in enumerate(answers):
        if index % 2:
            assert_answers_good_requests(answer)
        else:
            assert answer[0] == 400, answer


def test_a_bytes_element_over_the_codec_limit_is_refused_with_413_and_the_server_keeps_serving(torchserve):
    status, text = torchserve_post(torchserve, changed("text", data=["x" * (MAX_BYTES_ELEMENT + 1)]))
    assert status == 413, text[:200]
    assert f"input 'text' has an element of {MAX_BYTES_ELEMENT + 1:,} bytes, over the limit of {MAX_BYTES_ELEMENT:,}" in text
    assert_answers_good_requests(torchserve_post(torchserve, json.dumps(GOOD).encode()))


GOOD_BUFFERS = {"text": struct.pack("<I", 2) + b"hi", "x": struct.pack("<2f", 1.5, 2), "level": b"\x03"}
GOOD_SHAPES = {"text": [1, 1], "x": [1, 2], "level": [1, 1]}
DATATYPES = {"text": "BYTES", "x": "FP32", "level": "UINT8"}


def binary_body(**changed: tuple[list[int], bytes]) -> tuple[bytes, int]:
    """GOOD as binary tensor data and its header length, with some inputs' (shape, bytes) changed."""
    entries, buffers = [], []
    for name, datatype in DATATYPES.items():
        shape, data = changed.get(name, (GOOD_SHAPES[name], GOOD_BUFFERS[name]))
        entries.append({"name": name, "shape": shape, "datatype": datatype, "parameters": {"binary_data_size": len(data)}})
        buffers.append(data)
    header = json.dumps({"inputs": entries}).encode()
    return header + b"".join(buffers), len(header)


@dataclass(frozen=True)
class Overflow:
    """A shape whose element count overflows int64 (or that no array can take), sent with the few bytes a small one
    would have: what mfn's codec says on TorchServe, and the input Triton's own refusal names."""

    id: str
    changed: dict
    message: str
    triton_input: str


OVERFLOWS = [
    # numpy's int64 product of the shape is 0: the codec took it for an empty tensor, then failed with a 500.
    Overflow("product-2**64", {"x": ([2**32, 2**32], b"")}, "input 'x': 0 bytes of FP32 data, but shape [4294967296, "
             "4294967296] needs 73,786,976,294,838,206,464 (18,446,744,073,709,551,616 values of 4 bytes)", "x"),
    # 16 bytes: one row of four FP32 values, which tritonserver takes 2**61+1 rows for (see rows-2**32+1).
    Overflow("rows-2**61+1", {"x": ([2305843009213693953, 4], bytes(16))}, "input 'x': \"shape\" [2305843009213693953, 4] "
             "has a dimension of 2,305,843,009,213,693,953, more than any request can hold", "x"),
    Overflow("bytes-2**39", {"text": ([2**39, 1], struct.pack("<I", 0))}, "input 'text': 4 bytes of BYTES data, but shape "
             "[549755813888, 1] has 549,755,813,888 elements, which need at least 2,199,023,255,552", "text"),
    Overflow("empty-but-huge", {"x": ([2**39, 2**39, 0], b"")}, "input 'x': \"shape\" [549755813888, 549755813888, 0] "
             "is too large for an array", "x"),
    # tritonserver 2.51 keeps a request's batch size in 32 bits: 2**32+1 rows become one, and a model with a single
    # input answers that one row (200) while its stub sees only [1, ...]. With several inputs, Triton compares the
    # others' rows, in 64 bits, to that one and refuses.
    Overflow("rows-2**32+1", {name: ([2**32 + 1, *GOOD_SHAPES[name][1:]], GOOD_BUFFERS[name]) for name in DATATYPES},
             "input 'text': 6 bytes of BYTES data, but shape [4294967297, 1] has 4,294,967,297 elements", "x"),
]
OVERFLOW_IDS = [case.id for case in OVERFLOWS]


def server_process(deployment) -> tuple[int | None, int]:
    status = read_status(deployment)
    return status.server_pid, status.restarts


@pytest.mark.parametrize("case", OVERFLOWS, ids=OVERFLOW_IDS)
def test_torchserve_refuses_a_shape_that_overflows_with_400_over_http_and_grpc(torchserve, case):
    from mfn.client import torchserve_wire as torchserve_client
    from mfn.local.state import mfn_home

    before = server_process(torchserve)
    status, text = torchserve_post(torchserve, *binary_body(**case.changed))
    assert status == 400 and case.message in json.loads(text)["error"], text
    channel = torchserve_client.GrpcChannel(f"{torchserve.host}:{torchserve.ports['grpc']}", mfn_home() / "cache")
    try:
        # TorchServe's gRPC API carries no per-request status: the refusal is the answer's body.
        answer = channel.infer("mixed", torchserve_client.Body(*binary_body(**case.changed)), None,
                               read_key(torchserve, "inference"), 30)
    finally:
        channel.close()
    assert case.message in json.loads(answer)["error"]
    assert_answers_good_requests(torchserve_post(torchserve, json.dumps(GOOD).encode()))
    assert server_process(torchserve) == before


def triton_grpc_infer(deployment, changed: dict) -> tuple[str, str]:
    """One ModelInfer call built by hand (tritonclient's own inputs check shapes against their data): the status
    code's name and details."""
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    tensors, contents = [], []
    for name, datatype in DATATYPES.items():
        shape, data = changed.get(name, (GOOD_SHAPES[name], GOOD_BUFFERS[name]))
        tensors.append(service_pb2.ModelInferRequest.InferInputTensor(name=name, datatype=datatype, shape=shape))
        contents.append(data)
    key = read_key(deployment, "inference")
    with grpc.insecure_channel(f"{deployment.host}:{deployment.ports['grpc']}") as channel:
        try:
            service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
                service_pb2.ModelInferRequest(model_name="mixed", inputs=tensors, raw_input_contents=contents),
                timeout=30, metadata=[(GRPC_AUTH_HEADER, f"Bearer {key}")] if key else None)
        except grpc.RpcError as error:
            return error.code().name, error.details()
    return "OK", ""


@pytest.mark.parametrize("case", OVERFLOWS, ids=OVERFLOW_IDS)
def test_triton_refuses_a_shape_that_overflows_with_400_over_http_and_grpc(triton, case):
    before = server_process(triton)
    status, text = triton_post(triton, *binary_body(**case.changed))
    assert status == 400 and f"input '{case.triton_input}'" in json.loads(text)["error"], text
    code, details = triton_grpc_infer(triton, case.changed)
    assert code == "INVALID_ARGUMENT" and f"input '{case.triton_input}'" in details, (code, details)
    assert_answers_good_requests(triton_post(triton, json.dumps(GOOD).encode()))
    assert server_process(triton) == before


def requests_by_outcome(deployment) -> dict[str, float]:
    return {labels["outcome"]: value for name, labels, value in scrape(deployment.metrics_url)
            if name == "mfn_requests_total" and labels.get("model") == "mixed"}


def settled_outcomes(deployment) -> dict[str, float]:
    """mfn_requests_total once a flush interval has passed without it changing: earlier tests' requests all counted."""
    return settled(lambda: requests_by_outcome(deployment), FLUSH_INTERVAL_S * 1.5, "mfn_requests_total of mixed")


def test_a_shape_that_overflows_is_counted_invalid_not_error(torchserve):
    before = settled_outcomes(torchserve)
    for case in OVERFLOWS:
        assert torchserve_post(torchserve, *binary_body(**case.changed))[0] == 400
    after = wait_for(lambda: (counts := requests_by_outcome(torchserve)) and sum(counts.values()) >= sum(before.values())
                     + len(OVERFLOWS) and counts, 10 * FLUSH_INTERVAL_S, "the requests to be counted")
    assert after == {**before, "invalid": before["invalid"] + len(OVERFLOWS)}


VALUE_CASES = [
    pytest.param({"text": [[200000000]]}, "input 'text' expects BYTES (text), got a number (200000000)", id="int-for-bytes"),
    pytest.param({"x": [["a", "b"]]}, "input 'x' expects FP32 numbers, got text", id="text-for-fp32"),
    pytest.param({"x": [[1.0, 2.0], [3.0]]}, "input 'x' has rows of different lengths", id="ragged"),
    pytest.param({"x": json.loads("[" * 40 + "1" + "]" * 40)}, "input 'x' nests deeper than 32 levels", id="nested-40"),
    pytest.param({"level": [[300]]}, "input 'level' expects UINT8 integers from 0 to 255, got 300", id="300-for-uint8"),
]
TARGETS = [("malformed-ts", "http"), ("malformed-ts", "grpc"), ("malformed-tr", "http"), ("malformed-tr", "grpc")]


@pytest.mark.parametrize(("name", "protocol"), TARGETS)
@pytest.mark.parametrize(("values", "message"), VALUE_CASES)
def test_client_reports_a_bad_value_in_one_line_without_retrying(torchserve, triton, name, protocol, values, message):
    with mfn.Client(name, protocol=protocol) as client:
        with pytest.raises(InvokeError) as caught:
            client.infer("mixed", {**GOOD_VALUES, **values})
        assert_answers_good_requests_of(client.infer("mixed", GOOD_VALUES))
    text = str(caught.value)
    assert message in text and text.startswith("mixed") and "\n" not in text
    assert "attempts" not in text


def assert_answers_good_requests_of(outputs: dict[str, np.ndarray]) -> None:
    assert outputs["echo"].tolist() == [[b"hi"]] and outputs["total"].tolist() == [[10.5]]


CLI_CASES = [
    pytest.param('{"text": [[200000000]], "x": [[1, 2]], "level": [[1]]}', "input 'text' expects BYTES (text), got a number", id="int-for-bytes"),
    pytest.param('{"text": [["a"]], "x": [["a", "b"]], "level": [[1]]}', "input 'x' expects FP32 numbers, got text", id="text-for-fp32"),
    pytest.param('{"inputs": [{"name": "x", "datatype": "FP32", "data": [1, 2]}]}', "--data: input 'x' needs \"shape\"", id="no-shape"),
    pytest.param('{"text": [["a"]], "x": ' + "[" * 60 + "1" + "]" * 60 + "}", "--data: the text nests 61 levels deep", id="nested-60"),
    pytest.param('{"text": [["a"], ["b"]], "x": [[1, 2], [3]], "level": [[1], [2]]}', "input 'x' has rows of different lengths", id="ragged"),
    pytest.param("{oops", "--data: the text is not JSON", id="not-json"),
]


@pytest.mark.parametrize(("name", "protocol"), [("malformed-ts", "http"), ("malformed-tr", "grpc")])
@pytest.mark.parametrize(("data", "message"), CLI_CASES)
def test_mfn_invoke_prints_one_line_and_exits_1_for_a_bad_value(torchserve, triton, name, protocol, data, message):
    result = CliRunner().invoke(cli, ["invoke", "mixed", "--deployment", name, "--protocol", protocol, "--data", data])
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: ") and message in result.output, result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize(("server", "protocol"), [("torchserve", "http"), ("torchserve", "grpc"), ("triton", "http"), ("triton", "grpc")])
def test_a_url_where_nothing_ever_listened_fails_at_once_naming_it(server, protocol):
    # Retrying is for a server that answered this client and is restarting; one never reached is a wrong URL.
    port = closed_port()
    with mfn.Client(f"127.0.0.1:{port}", protocol=protocol, server=server, retries=50, timeout_s=5) as client:
        with pytest.raises(MfnError, match=rf"nothing listens at \S*127.0.0.1:{port} \(connection refused\)") as caught:
            client.infer("mixed", GOOD_VALUES)
    assert "\n" not in str(caught.value) and "attempts" not in str(caught.value)


def scale(deployment, workers: int) -> None:
    url = f"{management_url(deployment)}/models/mixed?min_worker={workers}&max_worker={workers}&synchronous=true"
    request = urllib.request.Request(url, method="PUT", headers={"Authorization": f"Bearer {read_key(deployment, 'management')}"})
    urllib.request.urlopen(request, timeout=60).close()


def test_a_model_without_a_worker_is_retried_as_restarting_then_reported(torchserve):
    scale(torchserve, 0)
    try:
        for protocol in ("http", "grpc"):
            with mfn.Client("malformed-ts", protocol=protocol, retries=1) as client:
                with pytest.raises(InvokeError, match=r"has no worker to serve inference request.*\(after 2 attempts\)"):
                    client.infer("mixed", GOOD_VALUES)
    finally:
        scale(torchserve, 1)
    with mfn.Client("malformed-ts") as client:
        assert_answers_good_requests_of(client.infer("mixed", GOOD_VALUES))


@pytest.mark.parametrize(
    ("status", "message", "retry"),
    [
        ("connection", "no connection: [Errno 111] Connection refused", True),
        ("UNAVAILABLE", "gRPC UNAVAILABLE: failed to connect to all addresses", True),
        ("503", 'HTTP 503: Model "m" has no worker to serve inference request.', True),
        ("INTERNAL", 'gRPC INTERNAL: Model "m" has no worker to serve inference request.', True),
        ("500", "HTTP 500: Worker died.", True),
        ("507", "HTTP 507: Worker died.", True),
        ("INTERNAL", "gRPC INTERNAL: Worker died.", True),
        ("503", "HTTP 503: Prediction failed", False),
        ("UNAVAILABLE", "gRPC UNAVAILABLE: Prediction failed", False),
        ("400", "HTTP 400: input 'x' expects FP32 numbers, got text", False),
        ("413", "HTTP 413: Worker died.", True),
        ("RESOURCE_EXHAUSTED", "gRPC RESOURCE_EXHAUSTED: Worker died.", True),
        ("500", "HTTP 500: Stub process 'm_0_0' is not healthy.", True),
        ("INTERNAL", "gRPC INTERNAL: Stub process 'm_0_0' is not healthy.", True),
        ("413", "HTTP 413: request body of 70,000,000 bytes exceeds the limit", False),
        ("500", "HTTP 500: predict failed: ValueError: poisoned row in batch", False),
        ("404", "HTTP 404: Model not found: m", False),
        ("timeout", "no answer within 5 s", True),
        ("DEADLINE_EXCEEDED", "gRPC DEADLINE_EXCEEDED: Deadline Exceeded", True),
        ("client", "unexpected datatype", False),
    ],
)
def test_the_retry_policy_repeats_only_what_cannot_be_the_requests_fault(status, message, retry):
    assert retryable(CallError(message, status)) is retry


def fuzz_bodies(seed: int, count: int, max_depth: int) -> list[bytes]:
    """Random JSON documents, random bytes and mutations of a good body, none nested deeper than `max_depth`."""
    rng = random.Random(seed)
    good = json.dumps(GOOD).encode()
    bodies: list[bytes] = []
    while len(bodies) < count:
        kind = len(bodies) % 3
        if kind == 0:
            body = json.dumps(random_document(rng, 4)).encode()
        elif kind == 1:
            body = rng.randbytes(rng.randint(0, 200))
        else:
            body = mutated(good, rng)
        if nesting_depth(body, max_depth) <= max_depth:
            bodies.append(body)
    return bodies


def random_document(rng: random.Random, depth: int):
    keys = ["inputs", "name", "shape", "datatype", "data", "text", "x", "level", "FP32", "BYTES"]
    choice = rng.randrange(8 if depth else 5)
    if choice == 0:
        return None
    if choice == 1:
        return rng.choice([True, False, float("nan"), float("inf"), -0.0, 2**64, -(2**63)])
    if choice == 2:
        return rng.randint(-300, 300)
    if choice == 3:
        return rng.random() * 10**rng.randint(-5, 40)
    if choice == 4:
        return rng.choice(["", "hi", "\u00e9", "[", "NaN", "FP32", "x" * 100])
    if choice in (5, 6):
        return [random_document(rng, depth - 1) for _ in range(rng.randint(0, 4))]
    return {rng.choice(keys): random_document(rng, depth - 1) for _ in range(rng.randint(0, 4))}


def mutated(body: bytes, rng: random.Random) -> bytes:
    data = bytearray(body)
    for _ in range(rng.randint(1, 4)):
        position = rng.randint(0, len(data))
        action = rng.randrange(4)
        if action == 0 and position < len(data):
            data[position] = rng.choice(b'[]{}",:0-.eE\\ntfu\xff')
        elif action == 1:
            data[position:position] = rng.choice([b"[", b"]", b"{", b'"', b"null", b"true", b"1e999", b"300"])
        elif action == 2:
            del data[position:position + rng.randint(1, 8)]
        else:
            del data[position:]
    return bytes(data)


def test_torchserve_survives_a_few_hundred_random_bodies(torchserve):
    bodies = fuzz_bodies(seed=12, count=300, max_depth=100_000)
    with ThreadPoolExecutor(8) as pool:
        statuses = Counter(status for status, _ in pool.map(lambda body: torchserve_post(torchserve, body), bodies))
    assert set(statuses) <= {200, 400}, statuses
    assert_answers_good_requests(torchserve_post(torchserve, json.dumps(GOOD).encode()))


def test_triton_survives_a_few_hundred_random_bodies(triton):
    bodies = fuzz_bodies(seed=13, count=300, max_depth=TRITON_MAX_DEPTH)
    with ThreadPoolExecutor(8) as pool:
        statuses = Counter(status for status, _ in pool.map(lambda body: triton_post(triton, body), bodies))
    assert set(statuses) <= {200, 400, 500}, statuses
    assert_answers_good_requests(triton_post(triton, json.dumps(GOOD).encode()))

