"""`mfn export`: a torch nn.Module (from a `module:factory` reference) to ONNX or TorchScript, checked.

The exported file is run on a random sample beside the original module, and the largest absolute
difference is reported; nothing is written if the export fails or the outputs disagree beyond `tolerance`.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mfn.errors import MfnError
from mfn.handlers.declarations import Tensor
from mfn.handlers.dtypes import numpy_dtype
from mfn.handlers.loading import import_handler_file

FORMATS = ("onnx", "torchscript")
DEFAULT_OPSET = 17


@dataclass(frozen=True)
class ExportResult:
    path: Path
    format: str
    max_abs_diff: float
    opset: int | None


def export_torch(
    ref: str, inputs: list[dict], output: Path, fmt: str = "onnx", opset: int = DEFAULT_OPSET, tolerance: float = 1e-4
) -> ExportResult:
    """Export the module `ref` builds; inputs are declared per row (NAME, DTYPE, DIMS) in call order."""
    import torch

    if fmt not in FORMATS:
        raise MfnError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if not inputs:
        raise MfnError("declare the module's inputs, e.g. --input features:FP32:4 (a sample is made from them)")
    module = build_module(ref)
    declared = [Tensor(**item) for item in inputs]
    rng = np.random.default_rng(0)
    sample = [
        torch.from_numpy(rng.standard_normal((2, *(3 if d == -1 else d for d in t.shape))).astype(numpy_dtype(t.dtype)))
        for t in declared
    ]
    with torch.inference_mode():
        expected = flatten_outputs(module(*sample))
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.", suffix=".tmp")
    os.close(fd)
    try:
        if fmt == "onnx":
            got = _to_onnx(module, sample, declared, len(expected), Path(temporary), opset)
        else:
            got = _to_torchscript(module, sample, Path(temporary))
        difference = max(float(np.max(np.abs(e - g))) for e, g in zip(expected, got))
        if difference > tolerance:
            raise MfnError(f"the exported model differs from the module by {difference:.3g} (> {tolerance}); not written")
        os.replace(temporary, output)
    finally:
        Path(temporary).unlink(missing_ok=True)
    return ExportResult(output, fmt, difference, opset if fmt == "onnx" else None)


def build_module(ref: str) -> Any:
    """The module a `path/to/file.py:factory` or `package.module:factory` reference builds, in eval mode."""
    import importlib

    target, sep, attribute = ref.rpartition(":")
    if not sep:
        raise MfnError(f"{ref!r}: give the factory as path/to/file.py:function or package.module:function")
    module = import_handler_file(Path(target)) if target.endswith(".py") else importlib.import_module(target)
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise MfnError(f"{ref}: {attribute!r} is not a function that builds a torch.nn.Module")
    return factory().eval()


def flatten_outputs(result: Any) -> list[np.ndarray]:
    """A module's outputs (tensor, tuple or dict) as a list of arrays."""
    values = result.values() if isinstance(result, dict) else result if isinstance(result, (tuple, list)) else [result]
    return [value.detach().numpy() for value in values]


def _to_onnx(module, sample, declared, outputs: int, path: Path, opset: int) -> list[np.ndarray]:
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
    except Exception:
        scripted = torch.jit.trace(module, tuple(sample))  # modules with Python-only constructs still trace
    scripted.save(str(path))
    with torch.inference_mode():
        return flatten_outputs(torch.jit.load(str(path))(*sample))
