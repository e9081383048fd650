"""TensorFlow conversions shared by `mfn export` and `mfn quantize`: SavedModel/Keras → TFLite or ONNX.

Everything converts from a SavedModel's `serving_default` signature (a Keras file is exported to one
first), so the converted model keeps the signature's input and output names and its dynamic batch.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mfn.errors import MfnError
from mfn.handlers.tensorflow_models import is_saved_model
from mfn.handlers.samples import sample_arrays
from mfn.handlers.tensorflow_models import SIGNATURE, import_tensorflow, load_keras, savedmodel_declarations

KERAS_SUFFIXES = (".keras", ".h5")
Runner = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


def is_tensorflow_model(ref: str) -> bool:
    path = Path(ref)
    return ":" not in ref and (is_saved_model(path) or (path.suffix in KERAS_SUFFIXES and path.is_file()))


def as_saved_model(path: Path, scratch: Path) -> Path:
    """`path` itself for a SavedModel; a Keras file exported to a SavedModel under `scratch`."""
    if is_saved_model(path):
        return path
    import_tensorflow()
    model = load_keras(path)
    target = scratch / "saved_model"
    write_keras_savedmodel(model, target)
    return target


def write_keras_savedmodel(model, target: Path) -> None:
    """A SavedModel whose serving signature keeps the Keras input names and output layer names.

    Keras's own `model.export` names the outputs `output_0`, …; the Keras handler serves the layer
    names, so a converted model would answer under different names than the .keras file it came from.
    """
    tf = import_tensorflow()
    import keras

    from mfn.handlers.tensorflow_models import keras_input_name, keras_output_names

    specs = [tf.TensorSpec(item.shape, tf.as_dtype(item.dtype), name=keras_input_name(item)) for item in model.inputs]
    names = keras_output_names(model)

    def serve(*tensors):
        result = model(list(tensors) if len(tensors) > 1 else tensors[0], training=False)
        if isinstance(result, dict):
            return result
        return dict(zip(names, result if isinstance(result, (list, tuple)) else [result]))

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(name=SIGNATURE, fn=serve, input_signature=specs)
    archive.write_out(str(target), verbose=False)


def savedmodel_runner(saved: Path) -> Runner:
    """The serving signature as a function of numpy arrays."""
    tf = import_tensorflow()
    signature = tf.saved_model.load(str(saved)).signatures[SIGNATURE]

    def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {name: value.numpy() for name, value in signature(**{k: tf.constant(v) for k, v in inputs.items()}).items()}

    return run


def tflite_runner(model: Path) -> Runner:
    from mfn.handlers.tflite import interpreter_class

    runner = interpreter_class()(model_path=str(model)).get_signature_runner(SIGNATURE)
    return lambda inputs: dict(runner(**inputs))


def random_sample(saved: Path, rows: int = 3) -> dict[str, np.ndarray]:
    """Inputs for a sanity check of a conversion: standard normal floats, small non-negative integers."""
    inputs = savedmodel_declarations(saved)["inputs"]
    for tensor in inputs:
        if tensor.dtype == "BYTES":
            raise MfnError(f"{saved}: input {tensor.name!r} is a string; converting string inputs is not supported")
    return sample_arrays(inputs, rows)


def to_tflite(saved: Path, quantization: str | None = None, representative: dict[str, np.ndarray] | None = None) -> bytes:
    """Convert with TensorFlow's TFLite converter, optionally quantized.

    dynamic-range stores weights as int8 and computes in float; int8 (full integer) also quantizes the
    activations, calibrated on `representative` one row at a time, keeping float inputs and outputs so
    the model's interface is unchanged.
    """
    tf = import_tensorflow()
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved), signature_keys=[SIGNATURE])
    if quantization is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "int8":
        if not representative:
            raise MfnError("int8 quantization needs representative inputs: give --sample with a few hundred rows")
        rows = len(next(iter(representative.values())))

        def dataset():
            for row in range(min(rows, 500)):
                yield {name: array[row : row + 1] for name, array in representative.items()}

        converter.representative_dataset = dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    try:
        return converter.convert()
    except Exception as error:  # noqa: BLE001 - the converter's errors, of any class, become one naming the file
        raise MfnError(f"{saved}: the TFLite converter failed: {_last_line(error)}") from None


def to_onnx(saved: Path, output: Path, opset: int) -> None:
    """Convert with tf2onnx, which keeps the signature's names and dynamic batch."""
    command = [sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(saved), "--signature_def", SIGNATURE,
               "--opset", str(opset), "--output", str(output)]
    if importlib.util.find_spec("tf2onnx") is None:
        raise MfnError("converting TensorFlow models to ONNX needs tf2onnx: pip install 'mfn-serve[tensorflow]'")
    # tf2onnx runs in its own process: it imports TensorFlow and onnx together, and its log goes to stderr.
    completed = subprocess.run(command, capture_output=True, text=True, check=False,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if completed.returncode != 0 or not output.is_file() or output.stat().st_size == 0:
        raise MfnError(f"{saved}: tf2onnx failed: {_last_line(completed.stderr)}")


def _last_line(error: object) -> str:
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__
