"""`mfn quantize`: real quantization of ONNX and torch models, sizes and differences measured on a sample."""

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import mfn
from mfn.cli.main import cli
from tests.conftest import HANDLERS
from tests.model_files import keras_classifier, run_model_file

FACTORY = f"{HANDLERS / 'factories.py'}:wide_classifier"


@pytest.fixture
def sample(tmp_path):
    path = tmp_path / "sample.npz"
    np.savez(path, input=np.random.default_rng(1).standard_normal((64, 64)).astype(np.float32))
    return path


@pytest.fixture
def onnx_model(tmp_path):
    result = CliRunner().invoke(cli, ["export", FACTORY, "--input", "input:FP32:64", "-o", str(tmp_path / "wide.onnx")])
    assert result.exit_code == 0, result.output
    return tmp_path / "wide.onnx"


@pytest.mark.parametrize("kind", ["onnx", "torch"])
def test_quantize_shrinks_the_model_and_reports_real_differences(tmp_path, sample, onnx_model, kind):
    model = str(onnx_model) if kind == "onnx" else FACTORY
    target = tmp_path / f"wide-int8.{'onnx' if kind == 'onnx' else 'pt'}"
    result = CliRunner().invoke(cli, ["quantize", model, "--sample", str(sample), "-o", str(target), "--max-abs-diff", "1", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["size_after"] < report["size_before"] * 0.6
    assert target.stat().st_size == report["size_after"]
    assert 0 < report["mean_abs_diff"] <= report["max_abs_diff"] <= 1
    assert report["top1_agreement"] is not None and report["top1_agreement"] >= 0.8


def test_a_difference_over_the_threshold_is_refused_and_nothing_is_written(tmp_path, sample, onnx_model):
    target = tmp_path / "strict.onnx"
    result = CliRunner().invoke(cli, ["quantize", str(onnx_model), "--sample", str(sample), "-o", str(target), "--max-abs-diff", "1e-9"])
    assert result.exit_code == 1 and "nothing written" in result.output
    assert not target.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sample.npz", "wide.onnx"]


@pytest.fixture(scope="module")
def keras_model(tmp_path_factory):
    return keras_classifier(tmp_path_factory.mktemp("keras"))


@pytest.fixture
def features_sample(tmp_path):
    path = tmp_path / "features.npz"
    np.savez(path, features=np.random.default_rng(1).standard_normal((64, 64)).astype(np.float32))
    return path


@pytest.mark.parametrize("method", ["dynamic-range", "int8"])
def test_tflite_quantization_shrinks_and_reports_the_difference_it_measured(tmp_path, features_sample, keras_model, method):
    import keras

    target = tmp_path / f"classifier-{method}.tflite"
    args = ["quantize", str(keras_model), "--sample", str(features_sample), "-o", str(target), "--method", method, "--json"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["method"] == f"tflite-{method}"
    assert report["size_after"] < report["size_before"] * 0.6 and target.stat().st_size == report["size_after"]
    features = np.load(features_sample)["features"]
    original = np.asarray(keras.saving.load_model(str(keras_model))(features, training=False))
    quantized = run_model_file(target, {"features": features})["logits"]
    assert report["max_abs_diff"] == pytest.approx(float(np.abs(original - quantized).max()), rel=1e-3, abs=1e-6)
    assert 0 < report["mean_abs_diff"] <= report["max_abs_diff"] < 0.05
    assert report["top1_agreement"] >= 0.9
    assert mfn.package(str(target), tmp_path / "repo").spec.outputs[0].name == "logits"


def test_tflite_quantization_refuses_past_the_threshold_or_a_sample_without_its_inputs(
    tmp_path, sample, features_sample, keras_model, onnx_model
):
    target = tmp_path / "strict.tflite"
    strict = ["quantize", str(keras_model), "--sample", str(features_sample), "-o", str(target), "--max-abs-diff", "1e-9"]
    refused = CliRunner().invoke(cli, strict)
    assert refused.exit_code == 1 and "nothing written" in refused.output and not target.exists()
    mismatched = CliRunner().invoke(cli, ["quantize", str(keras_model), "--sample", str(sample), "-o", str(target)])
    assert mismatched.exit_code == 1 and "the sample has no array for input(s) features (it holds input)" in mismatched.output
    assert not target.exists()
    wrong = CliRunner().invoke(cli, ["quantize", str(onnx_model), "--sample", str(sample), "-o", str(tmp_path / "q.onnx"), "--method", "int8"])
    assert wrong.exit_code == 1 and "--method int8 applies to TensorFlow models" in wrong.output


SMALL_FACTORY = f"{HANDLERS / 'factories.py'}:two_heads"


@pytest.mark.parametrize("kind", ["onnx", "torch"])
def test_a_model_that_grows_is_written_with_a_warning_and_library_noise_stays_out(tmp_path, kind):
    """Run as the user runs it, so what onnxruntime and torch print would reach the terminal."""
    features = tmp_path / "features.npz"
    np.savez(features, features=np.random.default_rng(2).standard_normal((16, 4)).astype(np.float32))
    model = SMALL_FACTORY
    if kind == "onnx":
        model = str(tmp_path / "small.onnx")
        exported = CliRunner().invoke(cli, ["export", SMALL_FACTORY, "--input", "features:FP32:4", "-o", model])
        assert exported.exit_code == 0, exported.output
    target = tmp_path / f"small-int8.{'onnx' if kind == 'onnx' else 'pt'}"
    result = subprocess.run([sys.executable, "-m", "mfn.cli.main", "quantize", model, "--sample", str(features),
                             "-o", str(target), "--max-abs-diff", "1", "--json"], capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["size_after"] > report["size_before"] and target.stat().st_size == report["size_after"]
    (warning,) = report["warnings"]
    assert f"larger than the original ({report['size_before']:,} → {report['size_after']:,} bytes)" in warning
    assert "serve the original" in warning
    assert result.stderr.splitlines() == [f"warning: {warning}"]


def test_the_hints_name_the_models_own_inputs_and_a_missing_factory_file(tmp_path, features_sample, onnx_model):
    wrong_name = CliRunner().invoke(cli, ["quantize", str(onnx_model), "--sample", str(features_sample), "-o", str(tmp_path / "q.onnx")])
    assert wrong_name.exit_code == 1 and "np.savez(path, input=x)" in wrong_name.output
    missing = tmp_path / "missing.py"
    no_file = CliRunner().invoke(cli, ["quantize", f"{missing}:build", "--sample", str(features_sample), "-o", str(tmp_path / "q.pt")])
    assert no_file.exit_code == 1
    assert f"the factory file {missing} does not exist" in no_file.output and "handler" not in no_file.output
