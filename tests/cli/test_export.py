"""`mfn export`: torch → ONNX / TorchScript, checked against the module, then packaged with no handler code."""

import numpy as np
import pytest
from click.testing import CliRunner

import mfn
from mfn.cli.main import cli
from tests.conftest import HANDLERS
from tests.model_files import FEATURES, MAKERS, run_model_file

FACTORY = f"{HANDLERS / 'factories.py'}:two_heads"


@pytest.mark.parametrize(("fmt", "suffix", "extra"), [("onnx", "onnx", []), ("torchscript", "pt", ["--input", "features:FP32:4"])])
def test_export_round_trip_then_package(tmp_path, fmt, suffix, extra):
    target = tmp_path / f"two_heads.{suffix}"
    result = CliRunner().invoke(cli, ["export", FACTORY, "--format", fmt, "--input", "features:FP32:4", "-o", str(target)])
    assert result.exit_code == 0, result.output
    assert f"exported {fmt} to {target}" in result.output and "max abs difference" in result.output
    if fmt == "onnx":
        assert "opset 17, dynamic batch axis" in result.output
    spec = mfn.package(str(target), tmp_path / "repo", inputs=[{"name": "features", "dtype": "FP32", "shape": [4]}] if extra else None).spec
    assert [(t.name, t.shape) for t in spec.outputs] == [("output_0", (3,)), ("output_1", (1,))]


def test_export_refuses_without_inputs_and_writes_nothing(tmp_path):
    result = CliRunner().invoke(cli, ["export", FACTORY, "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 1 and "--input features:FP32:4" in result.output
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(("kind", "fmt"), [("savedmodel", "tflite"), ("savedmodel", "onnx"), ("keras", "tflite"), ("keras", "onnx")])
def test_tensorflow_export_round_trip_keeps_names_and_outputs(tmp_path, kind, fmt):
    source, expected = MAKERS[kind](tmp_path)
    target = tmp_path / f"exported.{fmt}"
    result = CliRunner().invoke(cli, ["export", str(source), "--format", fmt, "-o", str(target)])
    assert result.exit_code == 0, result.output
    assert f"exported {fmt} to {target}" in result.output
    got = run_model_file(target, {"features": FEATURES})
    assert set(got) == set(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-4, atol=1e-5, err_msg=name)
    assert mfn.package(str(target), tmp_path / "repo").spec.outputs


def test_formats_that_do_not_fit_the_source_are_refused(tmp_path):
    source, _ = MAKERS["savedmodel"](tmp_path)
    refused = CliRunner().invoke(cli, ["export", str(source), "--format", "torchscript", "-o", str(tmp_path / "m.pt")])
    assert refused.exit_code == 1 and "exports to onnx or tflite, not torchscript" in refused.output
    refused = CliRunner().invoke(cli, ["export", FACTORY, "--format", "tflite", "--input", "features:FP32:4", "-o", str(tmp_path / "m.tflite")])
    assert refused.exit_code == 1 and "--format tflite takes a SavedModel directory or a Keras file" in refused.output
    assert not (tmp_path / "m.pt").exists() and not (tmp_path / "m.tflite").exists()
