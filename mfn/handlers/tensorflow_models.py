"""Built-in handlers for TensorFlow: a SavedModel directory (its serving signature) and a Keras model file.

Both read their declarations from the model itself: a SavedModel's `serving_default` signature names
and types every input and output; a Keras model has typed inputs, and its outputs are named after the
model's output layers.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from mfn.errors import MfnError, first_line
from mfn.handlers.base import Arrays, Context, Handler
from mfn.handlers.declarations import Tensor
from mfn.handlers.dtypes import canonical_dtype

SIGNATURE = "serving_default"
INSTALL_HINT = "serving TensorFlow models needs TensorFlow: pip install 'mfn-serve[tensorflow]'"


def is_saved_model(path: Path) -> bool:
    """Whether `path` is a TensorFlow SavedModel directory."""
    return path.is_dir() and (path / "saved_model.pb").is_file()


def import_tensorflow() -> Any:
    # TensorFlow's C++ start-up chatter (CPU features, oneDNN) is noise in a CLI and in server logs.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError:
        raise MfnError(INSTALL_HINT) from None
    return tf


def _tf_device(ctx: Context) -> str:
    return f"/GPU:{ctx.device.partition(':')[2] or 0}" if ctx.device.startswith("cuda") else "/CPU:0"


class SavedModelHandler(Handler):
    """Calls the `serving_default` signature of the declared `model` SavedModel directory."""

    def setup(self, ctx: Context) -> None:
        tf = import_tensorflow()
        self.tf = tf
        self.device = _tf_device(ctx)
        with tf.device(self.device):
            self.loaded = tf.saved_model.load(str(ctx.artifact("model")))
        self.signature = self.loaded.signatures[SIGNATURE]

    def predict(self, inputs: Arrays) -> Arrays:
        with self.tf.device(self.device):
            result = self.signature(**{name: self.tf.constant(array) for name, array in inputs.items()})
        return {name: value.numpy() for name, value in result.items()}


class KerasHandler(Handler):
    """Calls the declared `model` Keras file (.keras or legacy .h5) in inference mode."""

    def setup(self, ctx: Context) -> None:
        tf = import_tensorflow()
        self.tf = tf
        self.device = _tf_device(ctx)
        with tf.device(self.device):
            self.model = load_keras(Path(ctx.artifact("model")))
        self.output_names = keras_output_names(self.model)

    def predict(self, inputs: Arrays) -> Arrays:
        with self.tf.device(self.device):
            result = self.model(list(inputs.values()) if len(inputs) > 1 else next(iter(inputs.values())), training=False)
        return name_keras_outputs(result, self.output_names)


def keras_output_names(model: Any) -> list[str]:
    return list(getattr(model, "output_names", None) or [f"output_{i}" for i in range(len(model.outputs))])


def name_keras_outputs(result: Any, names: list[str]) -> dict[str, np.ndarray]:
    if isinstance(result, dict):
        return {name: np.asarray(value) for name, value in result.items()}
    values = result if isinstance(result, (list, tuple)) else [result]
    return {name: np.asarray(value) for name, value in zip(names, values)}


def savedmodel_declarations(path: Path) -> dict:
    """Inputs and outputs of a SavedModel's serving signature, per row.

    Raises:
        MfnError: naming the directory when it does not load, has no serving signature, or cannot be batched.
    """
    tf = import_tensorflow()
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as error:  # noqa: BLE001 - TensorFlow's errors, of any class, become one naming the file
        raise MfnError(f"{path} is not a SavedModel TensorFlow can load: {first_line(error)}") from None
    if SIGNATURE not in loaded.signatures:
        found = ", ".join(loaded.signatures) or "none"
        raise MfnError(
            f"{path}: no {SIGNATURE!r} signature (found: {found}); save it with "
            f"tf.saved_model.save(model, path, signatures={{'{SIGNATURE}': fn}}) or keras model.export(path)"
        )
    function = loaded.signatures[SIGNATURE]
    _, input_specs = function.structured_input_signature
    return {
        "inputs": [_tensor(path, name, spec.dtype, spec.shape) for name, spec in sorted(input_specs.items())],
        "outputs": [_tensor(path, name, spec.dtype, spec.shape) for name, spec in sorted(function.structured_outputs.items())],
    }


def load_keras(path: Path) -> Any:
    """A Keras model loaded in Keras's safe mode, which refuses to deserialize the Python bytecode of Lambda
    layers (it would run on load). mfn offers no way around it: rebuild such a model without Lambda layers.

    Raises:
        MfnError: naming the file when Keras cannot load it, or refuses it in safe mode.
    """
    import keras

    try:
        return keras.saving.load_model(str(path), compile=False, safe_mode=True)
    except Exception as error:  # noqa: BLE001 - Keras's errors, of any class, become one naming the file
        reason = first_line(error)
        if "safe_mode" in str(error):
            raise MfnError(f"{path.name} holds Python code (a Lambda layer) that Keras runs on load; mfn loads Keras "
                           "files in safe mode and refuses it: rebuild the model without Lambda layers") from None
        raise MfnError(f"{path} is not a model Keras can load: {reason}") from None


def keras_declarations(path: Path) -> dict:
    """Inputs of a Keras model from its input tensors; outputs named after its output layers.

    Raises:
        MfnError: naming the file when Keras cannot load it or it cannot be batched.
    """
    tf = import_tensorflow()
    model = load_keras(path)
    names = keras_output_names(model)
    outputs = model.outputs if isinstance(model.outputs, (list, tuple)) else [model.outputs]
    return {
        "inputs": [_tensor(path, keras_input_name(item), tf.as_dtype(item.dtype), item.shape) for item in model.inputs],
        "outputs": [_tensor(path, name, tf.as_dtype(item.dtype), item.shape) for name, item in zip(names, outputs)],
    }


def keras_input_name(item: Any) -> str:
    # Keras 3 names an Input layer's tensor after the layer ("features") unless it was left unnamed.
    return str(getattr(item, "name", "") or "input").split(":")[0]


def _tensor(path: Path, name: str, dtype: Any, shape: Any) -> Tensor:
    dims = _dims(shape)
    if not dims:
        raise MfnError(f"{path}: tensor {name!r} has no batch dimension (shape {shape}); mfn serves batched models")
    batch, *per_row = dims
    if batch is not None:
        raise MfnError(
            f"{path}: tensor {name!r} has a fixed first dimension {batch}; save the model with a None batch "
            "dimension (e.g. tf.TensorSpec([None, ...]) or keras.Input(shape=(...)))"
        )
    try:
        mfn_dtype = canonical_dtype(np.dtype(dtype.as_numpy_dtype) if dtype.name != "string" else np.object_)
    except (TypeError, ValueError):
        raise MfnError(f"{path}: tensor {name!r} has type {dtype.name}, which mfn does not serve") from None
    return Tensor(name, mfn_dtype, [-1 if dim is None else int(dim) for dim in per_row])


def _dims(shape: Any) -> list | None:
    if hasattr(shape, "rank"):  # tf.TensorShape, possibly of unknown rank
        return None if shape.rank is None else shape.as_list()
    return None if shape is None else list(shape)
