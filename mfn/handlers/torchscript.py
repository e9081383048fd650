"""Built-in handler: a TorchScript file served with torch.jit, inputs declared by the user.

TorchScript keeps no tensor declarations, so the inputs come from `--input NAME:DTYPE:DIMS` and the
outputs are found by running the model once on a sample batch: a single tensor is `output`, a tuple
gives `output_0`, `output_1`, …, and a dict keeps its keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mfn.errors import MfnError, first_line
from mfn.handlers.base import Arrays, Context, Handler
from mfn.handlers.declarations import Tensor, Warmup
from mfn.handlers.dtypes import canonical_dtype
from mfn.handlers.samples import sample_arrays


class TorchScriptModel(Handler):
    """Calls the declared `model` artifact with the inputs in their declared order."""

    # TorchScript's profiling executor optimises a graph only after two calls: warm-up runs them, not the first users.
    warmup = Warmup()

    def setup(self, ctx: Context) -> None:
        import torch

        self.torch = torch
        self.device = ctx.device
        self.model = torch.jit.load(ctx.artifact("model"), map_location=ctx.device).eval()  # type: ignore[no-untyped-call]

    def predict(self, inputs: Arrays) -> Arrays:
        torch = self.torch
        with torch.inference_mode():
            result = self.model(*(torch.from_numpy(np.ascontiguousarray(array)).to(self.device) for array in inputs.values()))
        return {name: value.cpu().numpy() for name, value in name_outputs(result).items()}


def name_outputs(result: Any) -> dict[str, Any]:
    """Output names for what a TorchScript model returned."""
    if isinstance(result, dict):
        return dict(result)
    if isinstance(result, (tuple, list)):
        return {f"output_{index}": value for index, value in enumerate(result)}
    return {"output": result}


def torchscript_declarations(path: Path, inputs: Sequence[Any] | None) -> dict:
    """Inputs as given; outputs from one call on a two-row sample batch.

    Raises:
        MfnError: naming the file when inputs are missing, or it does not load or run.
    """
    if not inputs:
        raise MfnError(f"{path.name}: TorchScript files carry no input declarations; give them, e.g. --input features:FP32:4")
    import torch

    declared = [item if isinstance(item, Tensor) else Tensor(**item) for item in inputs]
    try:
        model = torch.jit.load(str(path), map_location="cpu").eval()  # type: ignore[no-untyped-call]
    except Exception as error:  # noqa: BLE001 - torch's errors, of any class, become one naming the file
        raise MfnError(f"{path} is not a TorchScript model torch.jit.load can read: {first_line(error)}") from None
    sample = sample_batch(declared, rows=2)
    try:
        with torch.inference_mode():
            outputs = name_outputs(model(*sample))
    except Exception as error:  # noqa: BLE001 - the model's own errors, of any class, become one naming the file
        raise MfnError(f"{path.name}: running it on zeros of the declared inputs failed: {error}") from None
    return {"inputs": declared, "outputs": output_declarations(outputs)}


def sample_batch(tensors: Sequence[Tensor], rows: int) -> list[Any]:
    """torch tensors of `rows` rows for each declaration, in order (see mfn.handlers.samples)."""
    import torch

    return [torch.from_numpy(array) for array in sample_arrays(tensors, rows).values()]


def output_declarations(outputs: dict[str, Any]) -> list[Tensor]:
    """Per-row declarations of the named torch outputs of one sample call."""
    return [Tensor(name, canonical_dtype(value.numpy().dtype), list(value.shape[1:])) for name, value in outputs.items()]
