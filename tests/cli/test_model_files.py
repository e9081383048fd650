"""Model files that cannot be served get an error naming the file; --native writes Triton's own backends' configs."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from mfn.cli.main import cli
from tests.conftest import GOLDEN, assert_matches_golden
from tests.model_files import exported_program, onnx_scorer, saved_model, torchscript_softmax

def write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def corrupt_saved_model(directory: Path) -> Path:
    (directory / "broken_sm").mkdir()
    write(directory / "broken_sm" / "saved_model.pb", b"\x00garbage")
    return directory / "broken_sm"


def plain_directory(directory: Path) -> Path:
    (directory / "empty_dir").mkdir()
    return directory / "empty_dir"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: write(d / "broken.onnx", b"not a model"), "broken.onnx is not a model onnxruntime can load"),
        (lambda d: onnx_scorer(d, dynamic_batch=False)[0], "fixed first dimension 2; export the model with a dynamic batch axis"),
        (lambda d: write(d / "broken.pt2", b"not a program"), "broken.pt2 is not a torch.export program"),
        (lambda d: exported_program(d, dynamic_batch=False)[0], "pt2_fixed.pt2: input 'features' has a fixed first dimension 2"),
        (corrupt_saved_model, "broken_sm is not a SavedModel TensorFlow can load"),
        (lambda d: write(d / "broken.keras", b"not a zip"), "broken.keras is not a model Keras can load"),
        (lambda d: write(d / "broken.tflite", b"not a flatbuffer"), "broken.tflite is not a model LiteRT can load"),
        (lambda d: write(d / "weights.pkl", b"x"), "no built-in handler for .pkl; supported: .onnx (ONNX (onnxruntime)); .pt (TorchScript)"),
        (plain_directory, "no built-in handler for a directory without saved_model.pb"),
    ],
    ids=["onnx-corrupt", "onnx-fixed-batch", "pt2-corrupt", "pt2-fixed-batch", "savedmodel-corrupt", "keras-corrupt",
         "tflite-corrupt", "unsupported", "plain-directory"],
)
def test_bad_model_files_get_an_error_naming_the_file(tmp_path, make, message):
    model_file = make(tmp_path)
    result = CliRunner().invoke(cli, ["package", str(model_file), "-o", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert not (tmp_path / "out").exists()


def test_a_corrupt_torchscript_file_is_refused_by_name(tmp_path):
    model_file = write(tmp_path / "broken.pt", b"not a zip")
    result = CliRunner().invoke(cli, ["package", str(model_file), "-o", str(tmp_path / "out"), "--input", "x:FP32:2"])
    assert result.exit_code == 1
    assert "broken.pt is not a TorchScript model torch.jit.load can read" in result.output
    assert not (tmp_path / "out").exists()


def native(model_file: Path, output: Path, *extra: str) -> model_config_pb2.ModelConfig:
    result = CliRunner().invoke(cli, ["package", str(model_file), "-o", str(output), "--native", "--instances", "gpu:1:0", *extra])
    assert result.exit_code == 0, result.output
    (model_dir,) = output.iterdir()
    text = (model_dir / "config.pbtxt").read_text()
    assert_matches_golden(text, GOLDEN / "triton" / f"native_{model_dir.name}.pbtxt")
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def test_native_onnx_config_and_layout(tmp_path):
    model_file, _ = onnx_scorer(tmp_path)
    config = native(model_file, tmp_path / "repo")
    assert (config.platform, config.default_model_filename, config.backend) == ("onnxruntime_onnx", "model.onnx", "")
    model_dir = tmp_path / "repo" / "onnx_scorer"
    assert sorted(str(p.relative_to(model_dir)) for p in model_dir.rglob("*") if p.is_file()) == ["1/model.onnx", "config.pbtxt", "mfn-manifest.json"]
    assert (model_dir / "1" / "model.onnx").read_bytes() == model_file.read_bytes()
    assert list(config.instance_group[0].gpus) == [0]
    refused = CliRunner().invoke(cli, ["package", str(model_file), "-o", str(tmp_path / "ts"), "--native", "--server", "torchserve"])
    assert refused.exit_code == 1 and "--native applies to model files" in refused.output


def test_native_torchscript_names_tensors_as_the_pytorch_backend_binds_them(tmp_path):
    model_file, _ = torchscript_softmax(tmp_path)
    config = native(model_file, tmp_path / "repo", "--input", "features:FP32:6")
    assert (config.platform, config.default_model_filename) == ("pytorch_libtorch", "model.pt")
    assert [(t.name, list(t.dims)) for t in config.input] == [("features__0", [6])]
    assert [(t.name, list(t.dims)) for t in config.output] == [("output__0", [4])]
    assert (tmp_path / "repo" / "ts_softmax" / "1" / "model.pt").read_bytes() == model_file.read_bytes()


def test_native_savedmodel_keeps_the_signature_names_and_the_whole_directory(tmp_path):
    model_dir, _ = saved_model(tmp_path)
    config = native(model_dir, tmp_path / "repo")
    assert (config.platform, config.default_model_filename) == ("tensorflow_savedmodel", "model.savedmodel")
    assert [t.name for t in config.input] == ["features"]
    best = {t.name: t for t in config.output}["best"]
    assert (list(best.dims), best.HasField("reshape")) == ([1], True)
    copied = tmp_path / "repo" / "tf_scorer" / "1" / "model.savedmodel"
    assert (copied / "saved_model.pb").read_bytes() == (model_dir / "saved_model.pb").read_bytes()
    assert (copied / "variables").is_dir()


def test_native_refuses_formats_triton_has_no_backend_for(tmp_path):
    model_file, _ = exported_program(tmp_path)
    result = CliRunner().invoke(cli, ["package", str(model_file), "-o", str(tmp_path / "repo"), "--native"])
    assert result.exit_code == 1
    assert "pt2_relu.pt2: Triton has no native backend for it; --native takes .onnx (onnxruntime_onnx)" in result.output
    assert not (tmp_path / "repo").exists()


def test_a_legacy_h5_keras_file_is_served_like_a_keras_file(tmp_path):
    import keras
    import numpy as np

    from mfn.packaging import resolve
    from mfn.runtime.bundle import load_in_process
    from tests.model_files import FEATURES

    keras.utils.set_random_seed(6)
    features = keras.Input(shape=(6,), name="features")
    model = keras.Model(features, keras.layers.Dense(2, name="scores")(features))
    model_file = tmp_path / "legacy.h5"
    model.save(str(model_file))
    source = resolve(str(model_file))
    assert [(t.name, t.shape) for t in source.spec.outputs] == [("scores", (2,))]
    loaded = load_in_process(source.cls, source.spec, source.handler_file, source.artifact_root)
    try:
        (answer,) = loaded.loop.run([{"features": FEATURES}])
    finally:
        loaded.close()
    np.testing.assert_allclose(answer["scores"], np.asarray(model(FEATURES, training=False)), rtol=1e-6, atol=1e-6)
