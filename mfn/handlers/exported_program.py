"""Built-in handler: a `torch.export` program (.pt2), declarations read from the program's own inputs.

An exported program records every input's dtype and shape, with dynamic dimensions kept symbolic, so
unlike TorchScript it needs no `--input`. Its outputs are named as for TorchScript (`output`,
`output_0`, … or a dict's keys), found by one call on a sample batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mfn.errors import MfnError, first_line
from mfn.handlers.base import Arrays, Context, Handler
from mfn.handlers.declarations import Tensor
from mfn.handlers.dtypes import canonical_dtype
from mfn.handlers.torchscript import name_outputs, output_declarations, sample_batch

BATCH_HINT = "export with dynamic_shapes giving dimension 0 torch.export.Dim('batch', min=1)"
PICKLE_HINT = (
    "unpickling runs whatever code the file's author put there; package it with --allow-pickle (allow_pickle = True) "
    "only if you trust where the file comes from"
)
# The .pt2 payloads torch.export.load may unpickle in full: pickled weights and constants, torchbind and opaque
# objects, sample inputs, and the legacy one-file weights and constants.
_PAYLOAD_CONFIGS = ("model_weights_config.json", "model_constants_config.json")


def check_pickles(path: Path) -> None:
    """Refuse a .pt2 with any payload that torch's weights-only unpickler (tensors and plain containers) cannot
    read: torch.export.load would fall back to full unpickling, which runs code. Nothing is unpickled in full here.

    Raises:
        MfnError: naming the file and the first such member.
    """
    import io
    import json
    import zipfile

    import torch

    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as error:
        raise MfnError(f"{path} is not a torch.export program torch.export.load can read: {first_line(error)}") from None
    with archive:
        names = archive.namelist()
        candidates = [name for name in names if "/sample_inputs/" in name or name.endswith((".pt", ".pkl"))]
        for config_name in (name for name in names if name.endswith(_PAYLOAD_CONFIGS)):
            folder = config_name.rsplit("/", 1)[0]
            for payload in json.loads(archive.read(config_name)).get("config", {}).values():
                path_name = payload.get("path_name", "")
                if payload.get("use_pickle") or not (payload.get("tensor_meta") or path_name.startswith("tensor")):
                    candidates.append(f"{folder}/{path_name}")
        for name in sorted(set(candidates) & set(names)):
            try:
                torch.load(io.BytesIO(archive.read(name)), weights_only=True, map_location="cpu")
            except Exception as error:  # noqa: BLE001 - torch's errors, of any class, become one naming the file
                raise MfnError(f"{path.name}: {name} holds pickled objects beyond tensors ({first_line(error)[:160]}); "
                               f"{PICKLE_HINT}") from None


class ExportedProgramModel(Handler):
    """Calls the declared `model` .pt2 program with the inputs in their declared order."""

    def setup(self, ctx: Context) -> None:
        import torch

        self.torch = torch
        self.device = ctx.device
        if not ctx.allow_pickle:
            check_pickles(Path(ctx.artifact("model")))
        self.module = torch.export.load(str(ctx.artifact("model"))).module().to(ctx.device)

    def predict(self, inputs: Arrays) -> Arrays:
        torch = self.torch
        arguments = [torch.from_numpy(np.ascontiguousarray(array)).to(self.device) for array in inputs.values()]
        with torch.inference_mode():
            result = self.module(*arguments)
        return {name: value.cpu().numpy() for name, value in name_outputs(result).items()}


def exported_program_declarations(path: Path, allow_pickle: bool = False) -> dict:
    """Inputs from the program's placeholders; outputs from one call on a one-row and a two-row batch.

    Raises:
        MfnError: naming the file when it holds pickled objects (without `allow_pickle`), does not load, has a
            fixed or min>1 batch dimension, or fails to run.
    """
    import torch

    if not allow_pickle:
        check_pickles(path)
    try:
        program = torch.export.load(str(path))
    except Exception as error:  # noqa: BLE001 - torch's errors, of any class, become one naming the file
        raise MfnError(f"{path} is not a torch.export program torch.export.load can read: {first_line(error)}") from None
    inputs = [_input(path, program, node) for node in _user_input_nodes(program)]
    module = program.module()
    outputs: dict[str, Any] = {}
    for rows in (1, 2):
        sample = sample_batch(inputs, rows)
        try:
            with torch.inference_mode():
                outputs = name_outputs(module(*sample))
        except Exception as error:  # noqa: BLE001 - the model's own errors, of any class, become one naming the file
            raise MfnError(f"{path.name}: running it on a {rows}-row batch failed ({first_line(error)}); {BATCH_HINT}") from None
    return {"inputs": inputs, "outputs": output_declarations(outputs)}


def _user_input_nodes(program: Any) -> list[Any]:
    from torch.export.graph_signature import InputKind

    names = [spec.arg.name for spec in program.graph_signature.input_specs if spec.kind == InputKind.USER_INPUT]
    nodes = {node.name: node for node in program.graph.nodes if node.op == "placeholder"}
    return [nodes[name] for name in names]


def _input(path: Path, program: Any, node: Any) -> Tensor:
    import torch

    value = node.meta["val"]
    if not value.shape:
        raise MfnError(f"{path}: input {node.name!r} is a scalar; mfn serves batched models")
    batch, *per_row = value.shape
    if not isinstance(batch, torch.SymInt):
        raise MfnError(f"{path}: input {node.name!r} has a fixed first dimension {batch}; {BATCH_HINT}")
    return Tensor(
        node.name,
        canonical_dtype(torch.empty(0, dtype=value.dtype).numpy().dtype),
        [-1 if isinstance(dim, torch.SymInt) else int(dim) for dim in per_row],
    )
