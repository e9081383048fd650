"""Built-in handler: an ONNX model served with onnxruntime, declarations read from the model's graph."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mfn.errors import MfnError, first_line
from mfn.handlers.base import Arrays, Context, Handler
from mfn.handlers.declarations import Tensor

# onnxruntime's type strings → mfn dtypes (strings are not supported yet: they need str, not bytes, arrays).
ONNX_TYPES = {
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(float16)": "FP16",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(bool)": "BOOL",
}


class OnnxModel(Handler):
    """Runs the declared `model` artifact with onnxruntime, one session per server instance."""

    def setup(self, ctx: Context) -> None:
        import onnxruntime

        providers: list[str | tuple[str, dict[str, int]]] = ["CPUExecutionProvider"]
        if ctx.device.startswith("cuda") and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": int(ctx.device.partition(":")[2] or 0)}))
        self.session = onnxruntime.InferenceSession(ctx.artifact("model"), providers=providers)
        self.output_names = [output.name for output in self.session.get_outputs()]

    def predict(self, inputs: Arrays) -> Arrays:
        return dict(zip(self.output_names, self.session.run(self.output_names, inputs)))


def onnx_declarations(path: Path) -> dict:
    """Name, inputs and outputs of an ONNX model, per row (the first dimension must be the batch).

    Raises:
        MfnError: naming the file when it is not a readable ONNX model or cannot be batched.
    """
    try:
        import onnxruntime
    except ImportError:
        raise MfnError("serving ONNX models needs onnxruntime: pip install 'mfn-serve[onnx]'") from None
    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as error:  # noqa: BLE001 - onnxruntime's errors, of any class, become one naming the file
        raise MfnError(f"{path} is not a model onnxruntime can load: {first_line(error)}") from None
    return {
        "inputs": [_tensor(path, item) for item in session.get_inputs()],
        "outputs": [_tensor(path, item) for item in session.get_outputs()],
    }


def _tensor(path: Path, item: Any) -> Tensor:  # an onnxruntime NodeArg
    if item.type not in ONNX_TYPES:
        raise MfnError(f"{path}: tensor {item.name!r} has type {item.type}, which mfn does not serve yet")
    batch, *per_row = item.shape or [None]
    if isinstance(batch, int):
        raise MfnError(
            f"{path}: tensor {item.name!r} has a fixed first dimension {batch}; export the model with a dynamic "
            "batch axis (e.g. dynamic_axes={name: {0: 'batch'}} in torch.onnx.export)"
        )
    return Tensor(item.name, ONNX_TYPES[item.type], [dim if isinstance(dim, int) else -1 for dim in per_row])

