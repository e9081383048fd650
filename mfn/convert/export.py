"""`mfn export`: a torch nn.Module (from a `module:factory` reference) to ONNX or TorchScript, and a
TensorFlow SavedModel or Keras file to TFLite or ONNX, each checked.

The exported file is run on a random sample beside the original, and the largest absolute difference
is reported; nothing is written if the export fails or the outputs disagree beyond `tolerance`.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mfn.files import SHARED, written_atomically
from mfn.errors import MfnError
from mfn.kinds import EXPORT_FORMATS
from mfn.handlers.declarations import Tensor
from mfn.handlers.samples import sample_arrays
from mfn.handlers.loading import import_handler_file

FORMATS = EXPORT_FORMATS
TORCH_FORMATS = ("onnx", "torchscript")
TENSORFLOW_FORMATS = ("onnx", "tflite")
DEFAULT_OPSET = 17


@dataclass(frozen=True)
class ExportResult:
    path: Path
    format: str
    max_abs_diff: float
    opset: int | None


def export_model(  # noqa: PLR0913
    ref: str, inputs: list[dict], output: Path, fmt: str = "onnx", opset: int = DEFAULT_OPSET, tolerance: float = 1e-4
) -> ExportResult:
    """Export a torch module factory, a TF SavedModel directory or a Keras file; checked against the original."""
    from mfn.convert.tensorflow import is_tensorflow_model

    if fmt not in FORMATS:
        raise MfnError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if is_tensorflow_model(ref):
        return export_tensorflow(Path(ref), output, fmt, opset, tolerance)
    if fmt not in TORCH_FORMATS:
        raise MfnError(f"{ref}: a torch module exports to {' or '.join(TORCH_FORMATS)}; --format {fmt} takes a "
                       "SavedModel directory or a Keras file")
    return export_torch(ref, inputs, output, fmt, opset, tolerance)


def export_tensorflow(path: Path, output: Path, fmt: str, opset: int = DEFAULT_OPSET, tolerance: float = 1e-4) -> ExportResult:
    """A SavedModel (or Keras file) to TFLite or ONNX, run on a random sample beside the original."""
    from mfn.convert import tensorflow as tf_convert

    if fmt not in TENSORFLOW_FORMATS:
        raise MfnError(f"{path}: a TensorFlow model exports to {' or '.join(TENSORFLOW_FORMATS)}, not {fmt}")
    with tempfile.TemporaryDirectory(prefix="mfn-export-") as scratch, written_atomically(Path(output), SHARED) as temporary:
        saved = tf_convert.as_saved_model(path, Path(scratch))
        sample = tf_convert.random_sample(saved)
        expected = tf_convert.savedmodel_runner(saved)(sample)
        if fmt == "tflite":
            temporary.write_bytes(tf_convert.to_tflite(saved))
            got = tf_convert.tflite_runner(temporary)(sample)
        else:
            tf_convert.to_onnx(saved, temporary, opset)
            got = _onnx_runner(temporary)(sample)
        difference = _largest_difference(path, expected, got)
        if difference > tolerance:
            raise MfnError(f"the exported model differs from {path.name} by {difference:.3g} (> {tolerance}); not written")
    return ExportResult(Path(output), fmt, difference, opset if fmt == "onnx" else None)


def _onnx_runner(model: Path):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    names = [item.name for item in session.get_outputs()]
    return lambda inputs: dict(zip(names, session.run(names, inputs)))


def _largest_difference(path: Path, expected: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> float:
    if set(expected) != set(got):
        raise MfnError(f"the exported model's outputs {sorted(got)} differ from {path.name}'s {sorted(expected)}")
    return max(float(np.max(np.abs(expected[name].astype(np.float64) - got[name].astype(np.float64)))) for name in expected)


def export_torch(  # noqa: PLR0913
    ref: str, inputs: list[dict], output: Path, fmt: str = "onnx", opset: int = DEFAULT_OPSET, tolerance: float = 1e-4
) -> ExportResult:
    """Export the module `ref` builds; inputs are declared per row (NAME, DTYPE, DIMS) in call order."""
    import torch

    if not inputs:
        raise MfnError("declare the module's inputs, e.g. --input features:FP32:4 (a sample is made from them)")
    module = build_module(ref)
    declared = [Tensor(**item) for item in inputs]
    sample = [torch.from_numpy(array) for array in sample_arrays(declared, rows=2).values()]
    with torch.inference_mode():
        expected = flatten_outputs(module(*sample))
    with written_atomically(Path(output), SHARED) as temporary:
        if fmt == "onnx":
            got = _to_onnx(module, sample, declared, len(expected), temporary, opset)
        else:
            got = _to_torchscript(module, sample, temporary)
        difference = max(float(np.max(np.abs(e - g))) for e, g in zip(expected, got))
        if difference > tolerance:
            raise MfnError(f"the exported model differs from the module by {difference:.3g} (> {tolerance}); not written")
    return ExportResult(Path(output), fmt, difference, opset if fmt == "onnx" else None)


def build_module(ref: str) -> Any:
    """The module a `path/to/file.py:factory` or `package.module:factory` reference builds, in eval mode."""
    import importlib

    target, sep, attribute = ref.rpartition(":")
    if not sep:
        raise MfnError(f"{ref!r}: give the factory as path/to/file.py:function or package.module:function")
    if target.endswith(".py") and not Path(target).is_file():
        raise MfnError(f"{ref}: the factory file {target} does not exist; give the factory as "
                       "path/to/file.py:function or package.module:function")
    module = import_handler_file(Path(target)) if target.endswith(".py") else importlib.import_module(target)
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise MfnError(f"{ref}: {attribute!r} is not a function that builds a torch.nn.Module")
    return factory().eval()


def flatten_outputs(result: Any) -> list[np.ndarray]:
    """A module's outputs (tensor, tuple or dict) as a list of arrays."""
    values = result.values() if isinstance(result, dict) else result if isinstance(result, (tuple, list)) else [result]
    return [value.detach().numpy() for value in values]


def _to_onnx(module, sample, declared, outputs: int, path: Path, opset: int) -> list[np.ndarray]:  # noqa: PLR0913
    import onnxruntime
    import torch

    output_names = ["output"] if outputs == 1 else [f"output_{i}" for i in range(outputs)]
    axes = {name: {0: "batch"} for name in [t.name for t in declared] + output_names}
    # The TorchScript-based exporter needs no extra packages and takes dynamic_axes directly.
    torch.onnx.export(module, tuple(sample), str(path), input_names=[t.name for t in declared], output_names=output_names,
                      dynamic_axes=axes, opset_version=opset, dynamo=False)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(output_names, {t.name: s.numpy() for t, s in zip(declared, sample)})


def _to_torchscript(module, sample, path: Path) -> list[np.ndarray]:
    import torch

    try:
        scripted = torch.jit.script(module)
    except Exception:  # noqa: BLE001 - scripting fails with many error classes; tracing is the way left
        scripted = torch.jit.trace(module, tuple(sample))  # modules with Python-only constructs still trace
    scripted.save(str(path))
    with torch.inference_mode():
        return flatten_outputs(torch.jit.load(str(path))(*sample))
