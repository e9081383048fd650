"""Pick the built-in handler for a model file and infer its spec, so a model file packages with no code."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from mfn.errors import MfnError
from mfn.handlers.base import Handler
from mfn.spec import Entrypoint, ModelSpec, spec_from_handler


@dataclass(frozen=True)
class Source:
    """A handler class, the file it lives in, its spec, and where its artifacts are read from."""

    cls: type[Handler]
    handler_file: Path
    spec: ModelSpec
    artifact_root: Path


SUPPORTED = {".onnx": "ONNX (onnxruntime)", ".pt": "TorchScript", ".ts": "TorchScript"}


def is_model_file(ref: str) -> bool:
    """Whether `ref` names a model file rather than a handler (`file.py:Class` or `module:Class`)."""
    if ":" in ref:
        return False
    path = Path(ref)
    return path.suffix in SUPPORTED or (path.is_file() and path.suffix != ".py")


def builtin_source(path: Path, **overrides: object) -> Source:
    """The built-in handler, its spec inferred from the model file, and the file's directory for artifacts."""
    path = path.resolve()
    if not path.is_file():
        raise MfnError(f"model file {path} does not exist")
    if path.suffix not in SUPPORTED:
        supported = ", ".join(f"{suffix} ({kind})" for suffix, kind in SUPPORTED.items())
        raise MfnError(f"{path.name}: no built-in handler for {path.suffix or 'files without a suffix'}; supported: {supported}")
    if path.suffix == ".onnx":
        from mfn.handlers import onnx as module

        declarations = module.onnx_declarations(path)
        cls, requirements = module.OnnxModel, ["onnxruntime>=1.17"]
    else:
        from mfn.handlers import torchscript as module  # type: ignore[no-redef]

        declarations = module.torchscript_declarations(path, overrides.pop("inputs", None))
        cls, requirements = module.TorchScriptModel, ["torch>=2.1"]
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem).lstrip("_.-") or "model"
    fields = {"name": name, **declarations, "artifacts": {"model": path.name}, "requirements": requirements}
    fields.update({key: value for key, value in overrides.items() if value is not None})
    handler_file = Path(module.__file__).resolve()
    spec = spec_from_handler(cls, Entrypoint(file=handler_file.name, attribute=cls.__name__), **fields)
    return Source(cls, handler_file, spec, path.parent)
