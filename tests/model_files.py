"""Small models of every supported format, made on the fly, each with its framework's own outputs for FEATURES.

Every maker writes one model file (or SavedModel directory) under `directory` and returns its path and
the outputs the framework itself computes in-process for FEATURES, by output name.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FEATURES = np.random.default_rng(3).standard_normal((5, 6)).astype(np.float32)
Made = tuple[Path, dict[str, np.ndarray]]


def onnx_scorer(directory: Path, dynamic_batch: bool = True) -> Made:
    import onnxruntime
    import torch

    path = directory / "onnx_scorer.onnx"
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).eval()
    axes = {"features": {0: "batch"}, "scores": {0: "batch"}} if dynamic_batch else None
    torch.onnx.export(model, (torch.randn(2, 6),), str(path), input_names=["features"], output_names=["scores"],
                      dynamic_axes=axes, opset_version=17, dynamo=False)
    if not dynamic_batch:
        return path, {}  # it takes only batches of two: there is nothing to compare
    expected = onnxruntime.InferenceSession(str(path)).run(["scores"], {"features": FEATURES})[0]
    return path, {"scores": expected}


def torchscript_softmax(directory: Path) -> Made:
    import torch

    torch.manual_seed(1)
    module = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.Softmax(dim=1)).eval()
    path = directory / "ts_softmax.pt"
    torch.jit.script(module).save(str(path))
    with torch.inference_mode():
        return path, {"output": module(torch.from_numpy(FEATURES)).numpy()}


def exported_program(directory: Path, dynamic_batch: bool = True) -> Made:
    import torch

    class Relu(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(2)
            self.linear = torch.nn.Linear(6, 4)

        def forward(self, features):
            return {"hidden": torch.relu(self.linear(features)), "total": features.sum(dim=1, keepdim=True)}

    module = Relu().eval()
    shapes = {"features": {0: torch.export.Dim("batch", min=1)}} if dynamic_batch else None
    program = torch.export.export(module, (torch.randn(2, 6),), dynamic_shapes=shapes)
    path = directory / ("pt2_relu.pt2" if dynamic_batch else "pt2_fixed.pt2")
    torch.export.save(program, str(path))
    if not dynamic_batch:
        return path, {}
    with torch.inference_mode():
        return path, {name: value.numpy() for name, value in module(torch.from_numpy(FEATURES)).items()}


def _scorer_module(tf):
    class Scorer(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weights = tf.Variable(np.random.default_rng(4).standard_normal((6, 3)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, 6], tf.float32, name="features")])
        def serve(self, features):
            scores = tf.matmul(features, self.weights)
            return {"scores": scores, "best": tf.argmax(scores, axis=1)}

    return Scorer()


def saved_model(directory: Path) -> Made:
    import tensorflow as tf

    path = directory / "tf_scorer"
    module = _scorer_module(tf)
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    result = tf.saved_model.load(str(path)).signatures["serving_default"](features=tf.constant(FEATURES))
    return path, {name: value.numpy() for name, value in result.items()}


def keras_model(directory: Path) -> Made:
    import keras

    keras.utils.set_random_seed(5)
    features = keras.Input(shape=(6,), name="features")
    hidden = keras.layers.Dense(8, activation="tanh")(features)
    model = keras.Model(features, keras.layers.Dense(3, name="scores")(hidden))
    path = directory / "keras_scorer.keras"
    model.save(str(path))
    return path, {"scores": np.asarray(model(FEATURES, training=False))}


def tflite_model(directory: Path) -> Made:
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    saved, _ = saved_model(directory)
    path = directory / "tflite_scorer.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_saved_model(str(saved)).convert())
    runner = Interpreter(model_path=str(path)).get_signature_runner("serving_default")
    return path, dict(runner(features=FEATURES))


def keras_classifier(directory: Path) -> Path:
    """About 300k weights, so quantized weights visibly shrink the file; ten logits per row."""
    import keras

    keras.utils.set_random_seed(7)
    features = keras.Input(shape=(64,), name="features")
    hidden = keras.layers.Dense(512, activation="relu")(features)
    hidden = keras.layers.Dense(512, activation="relu")(hidden)
    model = keras.Model(features, keras.layers.Dense(10, name="logits")(hidden))
    path = directory / "classifier.keras"
    model.save(str(path))
    return path


def run_model_file(path: Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Outputs of an .onnx or .tflite file run by its own runtime."""
    if path.suffix == ".onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path))
        names = [item.name for item in session.get_outputs()]
        return dict(zip(names, session.run(names, inputs)))
    from ai_edge_litert.interpreter import Interpreter

    return dict(Interpreter(model_path=str(path)).get_signature_runner("serving_default")(**inputs))


MAKERS = {
    "onnx": onnx_scorer,
    "torchscript": torchscript_softmax,
    "torch.export": exported_program,
    "savedmodel": saved_model,
    "keras": keras_model,
    "tflite": tflite_model,
}
# Formats whose files carry no input declarations take them as a package option.
DECLARED_INPUTS = {"torchscript": [{"name": "features", "dtype": "FP32", "shape": [6]}]}
