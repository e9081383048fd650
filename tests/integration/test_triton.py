"""Package → deploy → invoke on a real tritonserver, over HTTP and gRPC."""

from __future__ import annotations

import json
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.http as triton_http
from click.testing import CliRunner
from tritonclient.utils import InferenceServerException

import mfn
from mfn.cli.main import cli
from mfn.local import state
from mfn.packaging import build_spec
from mfn.runtime.bundle import load_in_process
from tests.integration.conftest import MLP, TEXT_STATS

pytestmark = pytest.mark.integration
PROTOCOLS = ["http", "grpc"]


def in_process(ref: str, inputs: dict) -> dict:
    cls, handler_file, spec = build_spec(ref)
    loaded = load_in_process(cls, spec, handler_file)
    try:
        (outputs,) = loaded.loop.run([inputs])
    finally:
        loaded.close()
    return outputs


def model_stats(deployment, model: str) -> dict[int, int]:
    request = urllib.request.Request(f"{deployment.http_url}/v2/models/{model}/stats",
                                     headers={"Authorization": f"Bearer {state.read_key(deployment, 'management')}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        (stats,) = json.load(response)["model_stats"]
    return {entry["batch_size"]: entry["compute_infer"]["count"] for entry in stats["batch_stats"]}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_mlp_outputs_equal_the_handler_in_process(deployment, protocol):
    features = np.random.default_rng(7).standard_normal((5, 4)).astype(np.float32)
    expected = in_process(MLP, {"features": features})
    with mfn.Client("suite", protocol=protocol) as client:
        served = client.infer("mlp", {"features": features})
    np.testing.assert_allclose(served["probs"], expected["probs"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(served["label"], expected["label"])
    assert served["probs"].dtype == np.float32 and served["label"].dtype == np.int64


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_text_stats_outputs_equal_the_handler_in_process(deployment, protocol):
    texts = np.array([["hello world"], ["mfn serves model functions"], ["\u00e9t\u00e9 \u00e0 Paris"]], dtype=object)
    expected = in_process(TEXT_STATS, {"text": np.vectorize(str.encode, otypes=[object])(texts)})
    with mfn.Client("suite", protocol=protocol) as client:
        served = client.infer("text_stats", {"text": texts})
    for name in ("n_chars", "n_words", "upper"):
        np.testing.assert_array_equal(served[name], expected[name])
    assert served["upper"][2, 0].decode() == "\u00c9T\u00c9 \u00c0 PARIS"


def test_32_concurrent_one_row_requests_are_answered_correctly_and_batched(deployment):
    rows = np.random.default_rng(3).standard_normal((32, 4)).astype(np.float32)
    expected = in_process(MLP, {"features": rows})["probs"]
    before = model_stats(deployment, "mlp")
    with mfn.Client("suite", protocol="grpc") as client, ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(lambda row: client.infer("mlp", {"features": row[None]})["probs"][0], rows))
    np.testing.assert_allclose(np.stack(answers), expected, rtol=1e-5, atol=1e-6)
    after = model_stats(deployment, "mlp")
    new_batches = {size: after.get(size, 0) - before.get(size, 0) for size in after}
    assert sum(size * count for size, count in new_batches.items()) == 32
    assert any(count > 0 for size, count in new_batches.items() if size > 1), f"no batch larger than 1: {new_batches}"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_two_versions_are_served_side_by_side(deployment, protocol):
    with mfn.Client("suite", protocol=protocol) as client:
        for version in (1, 2):
            answer = client.infer("versioned", {"x": [[0]]}, version=version)
            assert answer["served_by"].tolist() == [[version]]
        assert client.metadata("versioned")["versions"] == ["1", "2"]


def raw_infer(deployment, model: str, name: str, array: np.ndarray, datatype: str) -> None:
    client = triton_http.InferenceServerClient(deployment.http_url.removeprefix("http://"))
    try:
        infer_input = triton_http.InferInput(name, list(array.shape), datatype)
        infer_input.set_data_from_numpy(array)
        client.infer(model, [infer_input], headers={"authorization": f"Bearer {state.read_key(deployment, 'inference')}"})
    finally:
        client.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_stock_client_that_asks_for_one_output_gets_that_one(deployment, protocol):
    import tritonclient.grpc as triton_grpc

    module, url = (triton_http, deployment.http_url.removeprefix("http://")) if protocol == "http" else (
        triton_grpc, f"127.0.0.1:{deployment.ports['grpc']}")
    key_header = "authorization" if protocol == "http" else "triton-grpc-protocol-authorization"
    client = module.InferenceServerClient(url)
    try:
        text = module.InferInput("text", [1, 1], "BYTES")
        text.set_data_from_numpy(np.array([[b"one two three"]], dtype=object))
        answer = client.infer("text_stats", [text], outputs=[module.InferRequestedOutput("n_words")],
                              headers={key_header: f"Bearer {state.read_key(deployment, 'inference')}"})
    finally:
        client.close()
    assert answer.as_numpy("n_words").tolist() == [[3]]
    assert answer.as_numpy("upper") is None and answer.as_numpy("n_chars") is None


@pytest.mark.parametrize(
    ("array", "datatype", "message"),
    [
        (np.ones((1, 4), np.int32), "INT32", "data-type is 'INT32', but model 'mlp' expects 'FP32'"),
        (np.ones((1, 5), np.float32), "FP32", "unexpected shape for input 'features'"),
        (np.ones((33, 4), np.float32), "FP32", "batch-size must be <= 32"),
    ],
    ids=["dtype", "shape", "batch"],
)
def test_bad_requests_get_a_clear_error_and_the_server_keeps_serving(deployment, array, datatype, message):
    with pytest.raises(InferenceServerException) as caught:
        raw_infer(deployment, "mlp", "features", array, datatype)
    assert message in str(caught.value)
    with mfn.Client("suite") as client:
        assert client.infer("mlp", {"features": [1, 2, 3, 4]})["probs"].shape == (1, 3)


def test_variable_length_inputs_are_batched_by_shape(deployment):
    with mfn.Client(protocol="grpc") as client, ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda n: client.infer("sequences", {"tokens": [list(range(n))]}), [1, 2, 3, 1, 2, 3]))
    assert [a["length"].item() for a in answers] == [1, 2, 3, 1, 2, 3]
    assert [a["total"].item() for a in answers] == [0, 1, 3, 0, 1, 3]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_cli_invoke_prints_outputs_as_json(deployment, protocol):
    result = CliRunner().invoke(
        cli, ["invoke", "text_stats", "--deployment", "suite", "--data", '{"text": ["a b c"]}', "--protocol", protocol, "--json"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert answer["outputs"] == {"n_chars": [[5]], "n_words": [[3]], "upper": [["A B C"]]}
    assert answer["endpoint"].startswith(f"{protocol}://127.0.0.1:")


def test_cli_invoke_accepts_kserve_v2_json_from_a_file(deployment, tmp_path):
    request = {"inputs": [{"name": "features", "shape": [2, 4], "datatype": "FP32", "data": [1, 2, 3, 4, 5, 6, 7, 8]}]}
    (tmp_path / "request.json").write_text(json.dumps(request))
    result = CliRunner().invoke(cli, ["invoke", "mlp", "--deployment", "suite", "-d", f"@{tmp_path / 'request.json'}", "--version", "1"])
    assert result.exit_code == 0, result.output
    assert result.output.count("probs = ") == 1 and "label = [[" in result.output


def test_status_lists_the_deployment_with_its_endpoints(deployment):
    result = CliRunner().invoke(cli, ["status", "--json"])
    (entry,) = [d for d in json.loads(result.output)["local"] if d["name"] == "suite"]
    assert entry["running"] is True
    assert sorted(entry["models"]) == ["faulty", "mlp", "poisonable", "sequences", "text_stats", "versioned"]
    assert entry["endpoints"]["http"] == deployment.http_url
    with urllib.request.urlopen(entry["endpoints"]["metrics"], timeout=10) as response:
        assert "nv_inference_request_success" in response.read().decode()
    logs = CliRunner().invoke(cli, ["logs", "suite", "-n", "0"])
    assert "successfully loaded 'mlp'" in logs.output


@pytest.mark.parametrize("scheme", PROTOCOLS)
def test_invoke_by_url_without_the_state_file(deployment, scheme):
    address = deployment.http_url.removeprefix("http://") if scheme == "http" else deployment.grpc_url
    result = CliRunner().invoke(cli, ["invoke", "versioned", "--url", f"{scheme}://{address}", "-d", '{"x": [7]}', "--json"],
                                env={"MFN_TOKEN": state.read_key(deployment, "inference")})
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["outputs"] == {"served_by": [[2]]}
