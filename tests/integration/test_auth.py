"""Local Triton deployments: inference behind the deployment's inference key, admin APIs always behind the admin key."""

from __future__ import annotations

import gzip
import json
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import mfn
from mfn.local import deployments, state
from mfn.local.supervision import read_status
from mfn.servers.http import request
from tests.integration.conftest import MLP
from tests.processes import as_another_user, readable_by_another_user

pytestmark = pytest.mark.integration
INFER = json.dumps({"inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}).encode()


def bearer(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def grpc_infer(deployment, key: str | None):
    import tritonclient.grpc as grpc_client
    from tritonclient.utils import InferenceServerException

    client = grpc_client.InferenceServerClient(deployment.grpc_url)
    infer_input = grpc_client.InferInput("features", [1, 4], "FP32")
    infer_input.set_data_from_numpy(np.ones((1, 4), np.float32))
    try:
        headers = {"triton-grpc-protocol-authorization": f"Bearer {key}"} if key else None
        return client.infer("mlp", [infer_input], headers=headers).as_numpy("label")
    except InferenceServerException as error:
        return error
    finally:
        client.close()


@pytest.fixture(scope="module")
def open_inference(tmp_path_factory: pytest.TempPathFactory) -> Iterator[deployments.Deployment]:
    repository = tmp_path_factory.mktemp("no-auth")
    mfn.package(MLP, repository)
    deployed = deployments.deploy(repository, name="no-auth", auth=False, drain_timeout_s=0)
    yield deployed
    deployments.undeploy("no-auth")


def test_inference_needs_the_inference_key_on_http_and_grpc(deployment):
    inference, admin = state.read_key(deployment, "inference"), state.read_key(deployment, "management")
    assert inference and admin and inference != admin
    url = f"{deployment.http_url}/v2/models/mlp/infer"
    assert request("POST", url, 10, INFER)[0] == 403
    assert request("POST", url, 10, INFER, bearer(admin))[0] == 403  # the admin key is not an inference key
    assert request("POST", url, 10, INFER, bearer(inference))[0] == 200
    assert "is restricted" in str(grpc_infer(deployment, None))
    assert isinstance(grpc_infer(deployment, inference), np.ndarray)
    assert request("GET", f"{deployment.http_url}/v2/health/ready", 10)[0] == 200  # probes need no key
    with mfn.Client(deployment.name, protocol="grpc") as client:  # mfn's clients read the key themselves
        assert client.infer("mlp", {"features": np.ones((1, 4), np.float32)})["label"].shape == (1, 1)


def test_the_model_repository_api_is_closed_without_the_admin_key(deployment, open_inference):
    for served in (deployment, open_inference):
        admin = state.read_key(served, "management")
        unload = f"{served.http_url}/v2/repository/models/mlp/unload"
        for key in (None, state.read_key(served, "inference")):
            status, body = request("POST", unload, 10, b"{}", bearer(key))
            assert status == 403 and "restricted" in body
        assert request("POST", f"{served.http_url}/v2/repository/index", 10, b"{}", bearer(admin))[0] == 200
        with mfn.Client(served.name) as client:  # still loaded
            client.infer("mlp", {"features": np.ones((1, 4), np.float32)})


def test_no_auth_opens_inference_only_and_the_key_file_is_private(open_inference):
    assert deployments.callers_key("no-auth") is None
    assert request("POST", f"{deployments.public_url('no-auth')}/v2/models/mlp/infer", 10, INFER)[0] == 200
    # Served through the guarding proxy: the server itself keeps its inference key, so nobody goes around it.
    assert request("POST", f"{open_inference.http_url}/v2/models/mlp/infer", 10, INFER)[0] == 403
    key_file = Path(open_inference.key_file)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


HOSTILE_JSON = {
    "a shape that overflows memory": '{"inputs":[{"name":"features","shape":[1000000000000,4],"datatype":"FP32","data":[1,2,3,4]}]}',
    "JSON nested 40,000 deep": '{"inputs":[{"name":"features","shape":[1,4],"datatype":"FP32","data":' + "[" * 40_000 + "1"
                               + "]" * 40_000 + "}]}",
    "a negative dimension": '{"inputs":[{"name":"features","shape":[-1,4],"datatype":"FP32","data":[1,2,3,4]}]}',
}


def test_bodies_that_crash_tritonserver_get_a_4xx_from_the_guard_and_the_server_lives_on(open_inference):
    url = f"{deployments.public_url('no-auth')}/v2/models/mlp/infer"
    server_pid = read_status(open_inference).server_pid
    for what, body in HOSTILE_JSON.items():
        status, answer = request("POST", url, 30, body.encode())
        assert status == 400 and "refused by mfn's guard" in answer, (what, status, answer)
    status, answer = request("POST", url, 30, gzip.compress(INFER * 1000), {"Content-Encoding": "gzip"})
    assert status == 415 and "uncompressed" in answer
    header = json.dumps({"inputs": [{"name": "features", "shape": [2305843009213693953, 4], "datatype": "FP32",
                                      "parameters": {"binary_data_size": 16}}]}).encode()
    status, answer = request("POST", url, 30, header + bytes(16), {"Inference-Header-Content-Length": str(len(header))})
    assert status == 400 and "features" in answer
    assert read_status(open_inference).server_pid == server_pid and read_status(open_inference).restarts == 0
    assert request("POST", url, 10, INFER)[0] == 200


def test_a_hostile_body_without_the_key_is_refused_before_triton_parses_it(deployment):
    depth = 300_000  # crashes tritonserver 2.51's recursive JSON parser when it gets to parse it
    body = ('{"inputs":[{"name":"features","shape":[1,4],"datatype":"FP32","data":' + "[" * depth + "1" + "]" * depth + "}]}").encode()
    assert request("POST", f"{deployment.http_url}/v2/models/mlp/infer", 10, body)[0] == 403
    restarts = read_status(deployment).restarts
    with mfn.Client(deployment.name, retries=0) as client:
        assert client.infer("mlp", {"features": np.ones((1, 4), np.float32)})["label"].shape == (1, 1)
    assert read_status(deployment).restarts == restarts


def test_another_local_user_reads_no_key_and_cannot_use_the_admin_apis(deployment, open_inference):
    seen = readable_by_another_user()
    assert b"tritonserver" in seen and b"--model-repository=" in seen  # the server's command line was readable
    for served in (deployment, open_inference):
        for api in ("management", "inference"):
            key = state.read_key(served, api)
            assert key is None or key.encode() not in seen, f"{served.name}'s {api} key is readable by another user"
        evil = json.dumps({"parameters": {"config": "{}", "file:1/model.py": "aW1wb3J0IG9z"}})
        for path, body in (("/v2/repository/index", "{}"), ("/v2/repository/models/evil/load", evil),
                           ("/v2/repository/models/mlp/unload", "{}")):
            curl = as_another_user(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
                                    "--data", body, f"{served.http_url}{path}"])
            assert curl.stdout == b"403", (served.name, path, curl)
