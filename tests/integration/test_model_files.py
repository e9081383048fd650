"""A model file with no handler code: package → deploy → invoke on both servers, equal to onnxruntime in-process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from click.testing import CliRunner

import mfn
from mfn.cli.main import cli
from mfn.deploy import local

pytestmark = pytest.mark.integration
FEATURES = np.random.default_rng(3).standard_normal((5, 6)).astype(np.float32)


def export_onnx(path: Path, dynamic_batch: bool = True) -> Path:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).eval()
    axes = {"features": {0: "batch"}, "scores": {0: "batch"}} if dynamic_batch else None
    torch.onnx.export(model, (torch.randn(2, 6),), str(path), input_names=["features"], output_names=["scores"],
                      dynamic_axes=axes, opset_version=17, dynamo=False)
    return path


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory) -> Path:
    return export_onnx(tmp_path_factory.mktemp("onnx") / "scorer.onnx")


@pytest.mark.parametrize("server", ["triton", "torchserve"])
def test_an_onnx_file_is_served_with_no_handler_code(onnx_model, tmp_path, server):
    expected = onnxruntime.InferenceSession(str(onnx_model)).run(["scores"], {"features": FEATURES})[0]
    result = CliRunner().invoke(cli, ["package", str(onnx_model), "--target", server, "-o", str(tmp_path), "--max-batch-size", "16"])
    assert result.exit_code == 0, result.output
    deployment = local.deploy(tmp_path, name=f"onnx-{server}")
    try:
        for protocol in ("http", "grpc"):
            with mfn.Client(deployment.name, protocol=protocol) as client:
                served = client.infer("scorer", {"features": FEATURES})
            np.testing.assert_allclose(served["scores"], expected, rtol=1e-5, atol=1e-6)
    finally:
        local.undeploy(deployment.name)


def test_the_spec_comes_from_the_graph(onnx_model, tmp_path):
    spec = mfn.package(str(onnx_model), tmp_path).spec
    assert [(t.name, t.dtype, t.shape) for t in spec.inputs] == [("features", "FP32", (6,))]
    assert [(t.name, t.dtype, t.shape) for t in spec.outputs] == [("scores", "FP32", (3,))]
    assert spec.artifacts == {"model": "scorer.onnx"} and "onnxruntime>=1.17" in spec.requirements


def write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: write(d / "broken.onnx", b"not a model"), "broken.onnx is not a model onnxruntime can load"),
        (lambda d: export_onnx(d / "fixed.onnx", dynamic_batch=False), "fixed first dimension 2; export the model with a dynamic batch axis"),
        (lambda d: write(d / "weights.pkl", b"x"), "no built-in handler for .pkl; supported: .onnx (ONNX (onnxruntime)), .pt (TorchScript)"),
    ],
    ids=["corrupt", "fixed-batch", "unsupported"],
)
def test_bad_model_files_get_an_error_naming_the_file(tmp_path, make, message):
    model_file = make(tmp_path)
    result = CliRunner().invoke(cli, ["package", str(model_file), "-o", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert message in result.output
    assert not (tmp_path / "out").exists()


def test_native_onnx_config_for_triton_matches_golden_and_parses(onnx_model, tmp_path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from tests.conftest import GOLDEN, assert_matches_golden

    result = CliRunner().invoke(cli, ["package", str(onnx_model), "-o", str(tmp_path), "--native", "--instances", "gpu:1:0"])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "scorer" / "config.pbtxt").read_text()
    assert_matches_golden(text, GOLDEN / "triton" / "native_onnx.pbtxt")
    config = text_format.Parse(text, model_config_pb2.ModelConfig())
    assert (config.platform, config.default_model_filename, config.backend) == ("onnxruntime_onnx", "model.onnx", "")
    assert sorted(p.name for p in (tmp_path / "scorer").rglob("*") if p.is_file()) == ["config.pbtxt", "model.onnx"]
    assert (tmp_path / "scorer" / "1" / "model.onnx").read_bytes() == onnx_model.read_bytes()
    refused = CliRunner().invoke(cli, ["package", str(onnx_model), "-o", str(tmp_path / "ts"), "--native", "--target", "torchserve"])
    assert refused.exit_code == 1 and "--native applies to model files" in refused.output


def test_a_torchscript_file_is_served_with_declared_inputs(tmp_path):
    torch.manual_seed(1)
    module = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.Softmax(dim=1)).eval()
    model_file = tmp_path / "softmax.pt"
    torch.jit.script(module).save(str(model_file))
    with torch.inference_mode():
        expected = module(torch.from_numpy(FEATURES)).numpy()
    result = CliRunner().invoke(cli, ["package", str(model_file), "-o", str(tmp_path / "repo"), "--input", "features:FP32:6"])
    assert result.exit_code == 0, result.output
    spec = mfn.package(str(model_file), tmp_path / "check", inputs=[{"name": "features", "dtype": "FP32", "shape": [6]}]).spec
    assert [(t.name, t.dtype, t.shape) for t in spec.outputs] == [("output", "FP32", (4,))]
    deployment = local.deploy(tmp_path / "repo", name="torchscript")
    try:
        with mfn.Client("torchscript", protocol="grpc") as client:
            np.testing.assert_allclose(client.infer("softmax", {"features": FEATURES})["output"], expected, rtol=1e-5, atol=1e-6)
    finally:
        local.undeploy("torchscript")
    missing = CliRunner().invoke(cli, ["package", str(model_file), "-o", str(tmp_path / "none")])
    assert missing.exit_code == 1 and "give them, e.g. --input features:FP32:4" in missing.output
