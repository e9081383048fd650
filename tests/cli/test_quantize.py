"""`mfn quantize`: real quantization of ONNX and torch models, sizes and differences measured on a sample."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from mfn.cli.main import cli
from tests.conftest import HANDLERS

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
