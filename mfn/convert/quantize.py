"""`mfn quantize`: shrink a model, measure what it costs on the user's own sample, refuse past a threshold.

- ONNX files: onnxruntime's dynamic quantization (int8 weights).
- torch modules (`path/to/file.py:factory`): torch's dynamic quantization of Linear layers, saved as TorchScript.
- TensorFlow SavedModel directories and Keras files, converted to TFLite: dynamic-range (int8 weights) or
  int8 (full integer: weights and activations, calibrated on the sample as the representative dataset).
  The size before is that of the same model converted to TFLite without quantization.

The quantized model and the original both run on the arrays of a .npz sample (keyed by input name, in
the model's input order); the report gives sizes, the largest and mean absolute output difference and,
for classifier-shaped first outputs, how often the top-1 class agrees.

What onnxruntime and torch print while quantizing (deprecations and hints for their own developers) is captured:
the report keeps only other warnings, and adds its own when the quantized file came out larger.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from mfn.errors import MfnError, first_line


@dataclass(frozen=True)
class QuantizeReport:
    method: str
    output: str
    size_before: int
    size_after: int
    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float | None
    warnings: tuple[str, ...] = field(default=())

    def to_json(self) -> dict:
        return asdict(self)


def quantize(
    model: str, sample: Path, output: Path, max_abs_diff: float = 0.05, method: str | None = None
) -> QuantizeReport:
    """Quantize `model` into `output` unless its outputs move more than `max_abs_diff` on `sample`.

    `method` chooses between TFLite's dynamic-range (the default) and int8 quantization for TensorFlow
    models; ONNX and torch models have one method each.

    Raises:
        MfnError: for an unsupported model, an unreadable sample, or a difference over the threshold
            (then nothing is written).
    """
    from mfn.files import SHARED, written_atomically
    from mfn.convert.tensorflow import is_tensorflow_model
    from mfn.kinds import QUANTIZATIONS

    inputs = _load_sample(sample)
    tensorflow = is_tensorflow_model(model)
    if method is not None and not (tensorflow and method in QUANTIZATIONS):
        raise MfnError(f"--method {method} applies to TensorFlow models, as one of {', '.join(QUANTIZATIONS)}")
    with written_atomically(Path(output), SHARED) as temporary, _library_messages() as messages:
        if tensorflow:
            method, size_before, run_before, run_after = _tflite(Path(model), inputs, temporary, method or QUANTIZATIONS[0])
        elif model.endswith(".onnx") and ":" not in model:
            method, size_before, run_before, run_after = _onnx(Path(model), inputs, temporary)
        elif ":" in model:
            method, size_before, run_before, run_after = _torch(model, inputs, temporary)
        else:
            raise MfnError(
                f"{model}: quantize takes an .onnx file, a torch module factory (path/to/file.py:factory), "
                "a SavedModel directory or a Keras file"
            )
        before, after = run_before(inputs), run_after(inputs)
        report = _compare(method, str(output), size_before, temporary.stat().st_size, before, after)
        if report.max_abs_diff > max_abs_diff:
            raise MfnError(
                f"quantized outputs differ by up to {report.max_abs_diff:.4g} (> --max-abs-diff {max_abs_diff}) "
                f"on {sample.name}; nothing written. Raise the threshold if that is acceptable."
            )
    return replace(report, warnings=(*_growth_warning(report), *messages))


def _growth_warning(report: QuantizeReport) -> list[str]:
    if report.size_after <= report.size_before:
        return []
    return [(f"the quantized model is larger than the original ({report.size_before:,} → {report.size_after:,} bytes): "
             "the scales, zero points and quantize/dequantize steps quantization adds outweigh what int8 weights save "
             "when a model is this small or few of its operations can be quantized; serve the original instead")]


# What quantizing makes onnxruntime and torch say that is meant for their own developers, not for the user.
_NOISE = ("deprecated", "pre-processing before quantization")
_NOISE_CATEGORIES = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)


@contextmanager
def _library_messages() -> Iterator[list[str]]:
    """Capture Python warnings and root-logger records (onnxruntime's quantizer logs there) while the block runs;
    the list gets the first line of each that is not noise, once each."""
    kept: list[str] = []

    def keep(text: str, category: type[Warning] | None = None) -> None:
        line = text.strip().splitlines()[0] if text.strip() else ""
        noise = (category is not None and issubclass(category, _NOISE_CATEGORIES)) or any(
            words in line.lower() for words in _NOISE)
        if line and not noise and line not in kept:
            kept.append(line)

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            keep(record.getMessage())

    root = logging.getLogger()
    handlers = root.handlers[:]
    root.handlers = [Collect(logging.WARNING)]
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield kept
        for warning in caught:
            keep(str(warning.message), warning.category)
    finally:
        root.handlers = handlers


Runner = Callable[[dict[str, np.ndarray]], list[np.ndarray]]


def _onnx(path: Path, inputs: dict[str, np.ndarray], target: Path) -> tuple[str, int, Runner, Runner]:
    import onnxruntime
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if not path.is_file():
        raise MfnError(f"model file {path} does not exist")
    try:
        quantize_dynamic(str(path), str(target), weight_type=QuantType.QInt8)
    except Exception as error:  # noqa: BLE001 - onnxruntime's errors, of any class, become one naming the file
        raise MfnError(f"{path}: onnxruntime could not quantize it: {first_line(error)}") from None

    def runner(model_path: Path) -> Runner:
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: its notes on graph rewrites are not the user's concern
        session = onnxruntime.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        names = [item.name for item in session.get_inputs()]
        require_inputs(inputs, names)
        return lambda arrays: session.run(None, {name: arrays[name] for name in names})

    return "onnx-dynamic-int8", path.stat().st_size, runner(path), runner(target)


def _torch(ref: str, inputs: dict[str, np.ndarray], target: Path) -> tuple[str, int, Runner, Runner]:
    import torch

    from mfn.convert.export import build_module, flatten_outputs

    module = build_module(ref)
    example = tuple(torch.from_numpy(array) for array in inputs.values())
    quantized = torch.ao.quantization.quantize_dynamic(module, {torch.nn.Linear}, dtype=torch.qint8)
    with tempfile.TemporaryDirectory() as scratch:
        original_file = Path(scratch) / "original.pt"
        torch.jit.trace(module, example).save(str(original_file))
        size_before = original_file.stat().st_size
    torch.jit.trace(quantized, example).save(str(target))

    def runner(model: torch.nn.Module) -> Runner:
        def run(arrays: dict[str, np.ndarray]) -> list[np.ndarray]:
            with torch.inference_mode():
                return flatten_outputs(model(*(torch.from_numpy(a) for a in arrays.values())))

        return run

    return "torch-dynamic-int8-linear", size_before, runner(module), runner(torch.jit.load(str(target)))


def _tflite(path: Path, inputs: dict[str, np.ndarray], target: Path, method: str) -> tuple[str, int, Runner, Runner]:
    from mfn.convert import tensorflow as tf_convert

    from mfn.handlers.tensorflow_models import savedmodel_declarations

    with tempfile.TemporaryDirectory(prefix="mfn-quantize-") as scratch:
        saved = tf_convert.as_saved_model(path, Path(scratch))
        require_inputs(inputs, [tensor.name for tensor in savedmodel_declarations(saved)["inputs"]])
        size_before = len(tf_convert.to_tflite(saved))
        target.write_bytes(tf_convert.to_tflite(saved, method, inputs))
        original = tf_convert.savedmodel_runner(saved)
    quantized = tf_convert.tflite_runner(target)

    def in_order(run: tf_convert.Runner) -> Runner:
        return lambda arrays: [value for _, value in sorted(run(arrays).items())]

    return f"tflite-{method}", size_before, in_order(original), in_order(quantized)


def require_inputs(sample: dict[str, np.ndarray], names: list[str]) -> None:
    missing = [name for name in names if name not in sample]
    if missing:
        raise MfnError(
            f"the sample has no array for input(s) {', '.join(missing)} (it holds {', '.join(sorted(sample))}); "
            f"save one array per model input under the input's name: {savez_example(names)}"
        )


def savez_example(names: list[str]) -> str:
    """How to write a sample for inputs `names`, e.g. `np.savez(path, features=x)`."""
    arrays = [f"x{index}" if len(names) > 1 else "x" for index in range(len(names))]
    if all(name.isidentifier() for name in names):
        return f"np.savez(path, {', '.join(f'{name}={array}' for name, array in zip(names, arrays))})"
    return f"np.savez(path, **{{{', '.join(f'{name!r}: {array}' for name, array in zip(names, arrays))}}})"


def _load_sample(sample: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(sample) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError) as error:
        raise MfnError(f"sample {sample} is not a readable .npz of input arrays: {error}") from None
    if not arrays:
        raise MfnError(f"sample {sample} holds no arrays; save one per model input under the input's name, "
                       "np.savez(path, NAME=array)")
    return arrays


def _compare(method: str, output: str, size_before: int, size_after: int, before: list, after: list) -> QuantizeReport:  # noqa: PLR0913
    differences = np.concatenate([np.abs(np.asarray(b, np.float64) - np.asarray(a, np.float64)).ravel() for b, a in zip(before, after)])
    first_before, first_after = np.asarray(before[0]), np.asarray(after[0])
    top1 = None
    if first_before.ndim == 2 and first_before.shape[1] > 1:
        top1 = float(np.mean(first_before.argmax(axis=1) == first_after.argmax(axis=1)))
    return QuantizeReport(
        method=method,
        output=output,
        size_before=size_before,
        size_after=size_after,
        max_abs_diff=float(differences.max()),
        mean_abs_diff=float(differences.mean()),
        top1_agreement=top1,
    )
