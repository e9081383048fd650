"""Every model format with no handler code: package → deploy → invoke over HTTP and gRPC on both servers.

Served outputs must equal what each framework computes in-process for the same features.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

import mfn
from mfn.local import deployments
from mfn.local.state import Deployment
from tests.model_files import DECLARED_INPUTS, FEATURES, MAKERS, Made

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Made]:
    made = {}
    for kind, make in MAKERS.items():
        made[kind] = make(tmp_path_factory.mktemp(kind.replace(".", "_")))
    return made


@pytest.fixture(scope="module", params=["triton", "torchserve"])
def served(request, models, tmp_path_factory) -> Iterator[tuple[Deployment, dict[str, str]]]:
    server = request.param
    output = tmp_path_factory.mktemp(f"formats-{server}")
    names = {}
    for kind, (path, _) in models.items():
        spec = mfn.package(str(path), output, server=server, batching={"max_batch_size": 16}, inputs=DECLARED_INPUTS.get(kind)).spec
        names[kind] = spec.name
    deployment = deployments.deploy(output, name=f"formats-{server}", auth=False, drain_timeout_s=0)
    try:
        yield deployment, names
    finally:
        deployments.undeploy(deployment.name)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("kind", list(MAKERS))
def test_served_outputs_equal_the_frameworks_own(served, models, kind, protocol):
    deployment, names = served
    _, expected = models[kind]
    with mfn.Client(deployment.name, protocol=protocol) as client:
        answer = client.infer(names[kind], {"features": FEATURES})
    assert set(answer) == set(expected)
    for name, value in expected.items():
        if deployment.server == "triton" and value.ndim == 1:
            # Triton has no per-row scalars: it shows them as one element per row ([batch, 1]).
            value = value.reshape(-1, 1)
        assert answer[name].shape == value.shape, name
        if np.issubdtype(value.dtype, np.floating):
            np.testing.assert_allclose(answer[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
        else:
            np.testing.assert_array_equal(answer[name], value, err_msg=name)


def test_each_spec_is_read_from_the_file(models, tmp_path):
    shapes = {}
    for kind, (path, _) in models.items():
        spec = mfn.package(str(path), tmp_path / kind, inputs=DECLARED_INPUTS.get(kind)).spec
        shapes[kind] = (
            [(t.name, t.dtype, t.shape) for t in spec.inputs],
            sorted((t.name, t.dtype, t.shape) for t in spec.outputs),
        )
    features = [("features", "FP32", (6,))]
    assert shapes == {
        "onnx": (features, [("scores", "FP32", (3,))]),
        "torchscript": (features, [("output", "FP32", (4,))]),
        "torch.export": (features, [("hidden", "FP32", (4,)), ("total", "FP32", (1,))]),
        "savedmodel": (features, [("best", "INT64", ()), ("scores", "FP32", (3,))]),
        "keras": (features, [("scores", "FP32", (3,))]),
        "tflite": (features, [("best", "INT64", ()), ("scores", "FP32", (3,))]),
    }


def test_a_savedmodel_directory_is_bundled_whole(models, tmp_path):
    path, _ = models["savedmodel"]
    result = mfn.package(str(path), tmp_path)
    bundled = result.path / "1" / "artifacts" / "model" / path.name
    assert (bundled / "saved_model.pb").is_file() and (bundled / "variables").is_dir()
    assert list(result.spec.requirements) == ["tensorflow>=2.16"]
