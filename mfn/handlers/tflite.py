"""Built-in handler: a TFLite flatbuffer run with LiteRT, declarations read from its serving signature.

LiteRT (`ai-edge-litert`) is the interpreter TensorFlow Lite became; it is a small package, so serving
a .tflite file needs no TensorFlow. Full TensorFlow's `tf.lite.Interpreter` is used when only it is there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mfn.errors import MfnError, first_line
from mfn.handlers.base import Arrays, Context, Handler
from mfn.handlers.declarations import Tensor
from mfn.handlers.dtypes import canonical_dtype

SIGNATURE = "serving_default"


def interpreter_class() -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tensorflow.lite import Interpreter
        except ImportError:
            raise MfnError("serving TFLite models needs LiteRT: pip install 'mfn-serve[tflite]'") from None
    return Interpreter


class TFLiteModel(Handler):
    """Runs the declared `model` .tflite file through its serving signature; one interpreter per instance."""

    def setup(self, ctx: Context) -> None:
        interpreter = interpreter_class()(model_path=str(ctx.artifact("model")))
        # The signature runner resizes its inputs to each batch and reallocates only when the size changes.
        self.runner = interpreter.get_signature_runner(_signature_key(interpreter))

    def predict(self, inputs: Arrays) -> Arrays:
        return dict(self.runner(**inputs))


def tflite_declarations(path: Path) -> dict:
    """Inputs and outputs of a .tflite file's signature, per row.

    Raises:
        MfnError: naming the file when it is not a TFLite model, has no signature, or cannot be batched.
    """
    try:
        interpreter = interpreter_class()(model_path=str(path))
    except MfnError:
        raise
    except Exception as error:  # noqa: BLE001 - LiteRT's errors, of any class, become one naming the file
        raise MfnError(f"{path} is not a model LiteRT can load: {first_line(error)}") from None
    runner = interpreter.get_signature_runner(_signature_key(interpreter, path))
    return {
        "inputs": [_tensor(path, name, detail) for name, detail in runner.get_input_details().items()],
        "outputs": [_tensor(path, name, detail) for name, detail in runner.get_output_details().items()],
    }


def _signature_key(interpreter: Any, path: Path | None = None) -> str:
    signatures = interpreter.get_signature_list()
    if SIGNATURE in signatures:
        return SIGNATURE
    if len(signatures) == 1:
        return str(next(iter(signatures)))
    where = f"{path}: " if path else ""
    raise MfnError(
        f"{where}expected one signature or {SIGNATURE!r}, found {sorted(signatures) or 'none'}; convert with "
        "tf.lite.TFLiteConverter.from_saved_model (or `mfn export --format tflite`), which keeps the signature"
    )


def _tensor(path: Path, name: str, detail: dict) -> Tensor:
    signature = [int(dim) for dim in detail.get("shape_signature", detail["shape"])]
    if not signature:
        raise MfnError(f"{path}: tensor {name!r} is a scalar; mfn serves batched models")
    batch, *per_row = signature
    if batch != -1:
        raise MfnError(
            f"{path}: tensor {name!r} has a fixed first dimension {batch}; convert the model from one with a "
            "None batch dimension so the .tflite file keeps a dynamic batch (shape_signature -1)"
        )
    try:
        dtype = canonical_dtype(np.dtype(detail["dtype"]))
    except ValueError:
        raise MfnError(f"{path}: tensor {name!r} has type {detail['dtype']}, which mfn does not serve") from None
    return Tensor(name, dtype, per_row)
