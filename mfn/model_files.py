"""Model files without handler code: pick the built-in handler (mfn.handlers) for a file's format and infer its
spec, so `mfn package model.onnx` needs no code."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from mfn.errors import MfnError
from mfn.handlers.base import Handler
from mfn.handlers.tensorflow_models import is_saved_model
from mfn.spec import Entrypoint, ModelSpec, model_name_from, spec_from_handler


@dataclass(frozen=True)
class Source:
    """A handler class, the file it lives in, its spec, and where its artifacts are read from."""

    cls: type[Handler]
    handler_file: Path
    spec: ModelSpec
    artifact_root: Path


@dataclass(frozen=True)
class ModelFormat:
    """A kind of model file and the built-in handler (in `mfn.handlers.<module>`) that serves it."""

    description: str
    module: str
    handler: str
    declarations: str
    requirements: tuple[str, ...]
    needs_inputs: bool = False
    # Files that may hold pickles: their declarations reader takes allow_pickle.
    may_pickle: bool = False


SAVED_MODEL = "SavedModel directory"
FORMATS = {
    ".onnx": ModelFormat("ONNX (onnxruntime)", "onnx", "OnnxModel", "onnx_declarations", ("onnxruntime>=1.17",)),
    ".pt": ModelFormat("TorchScript", "torchscript", "TorchScriptModel", "torchscript_declarations", ("torch>=2.1",), True),
    ".ts": ModelFormat("TorchScript", "torchscript", "TorchScriptModel", "torchscript_declarations", ("torch>=2.1",), True),
    ".pt2": ModelFormat(
        "torch.export program", "exported_program", "ExportedProgramModel", "exported_program_declarations", ("torch>=2.5",),
        may_pickle=True,
    ),
    SAVED_MODEL: ModelFormat(
        "TensorFlow SavedModel", "tensorflow_models", "SavedModelHandler", "savedmodel_declarations", ("tensorflow>=2.16",)
    ),
    ".keras": ModelFormat("Keras", "tensorflow_models", "KerasHandler", "keras_declarations", ("tensorflow>=2.16",)),
    ".h5": ModelFormat("Keras (legacy HDF5)", "tensorflow_models", "KerasHandler", "keras_declarations", ("tensorflow>=2.16",)),
    ".tflite": ModelFormat("TFLite (LiteRT)", "tflite", "TFLiteModel", "tflite_declarations", ("ai-edge-litert>=1.2",)),
}


def is_model_file(ref: str) -> bool:
    """Whether `ref` names a model file rather than a handler (`file.py:Class` or `module:Class`)."""
    if ":" in ref:
        return False
    path = Path(ref)
    return path.suffix in FORMATS or path.is_dir() or (path.is_file() and path.suffix != ".py")


def model_format(path: Path) -> ModelFormat:
    """The format of `path`, by suffix (or a SavedModel's saved_model.pb).

    Raises:
        MfnError: naming the file and every supported format when none matches.
    """
    if is_saved_model(path):
        return FORMATS[SAVED_MODEL]
    if path.suffix in FORMATS and path.suffix != SAVED_MODEL and path.exists():
        return FORMATS[path.suffix]
    if not path.exists():
        raise MfnError(f"model file {path} does not exist")
    supported = "; ".join(f"{key} ({kind.description})" for key, kind in FORMATS.items())
    what = "a directory without saved_model.pb" if path.is_dir() else (path.suffix or "files without a suffix")
    raise MfnError(f"{path.name}: no built-in handler for {what}; supported: {supported}")


def builtin_source(path: Path, **overrides: object) -> Source:
    """The built-in handler, its spec inferred from the model file, and the file's directory for artifacts."""
    path = path.resolve()
    kind = model_format(path)
    module = importlib.import_module(f"mfn.handlers.{kind.module}")
    read_declarations = getattr(module, kind.declarations)
    given_inputs = overrides.pop("inputs", None)
    if kind.needs_inputs:
        declarations = read_declarations(path, given_inputs)
    elif kind.may_pickle:
        declarations = read_declarations(path, allow_pickle=bool(overrides.get("allow_pickle")))
        if given_inputs:
            declarations["inputs"] = given_inputs
    else:
        declarations = read_declarations(path)
        if given_inputs:
            declarations["inputs"] = given_inputs
    cls = getattr(module, kind.handler)
    fields = {"name": model_name_from(path.stem), **declarations, "artifacts": {"model": path.name}, "requirements": list(kind.requirements)}
    fields.update({key: value for key, value in overrides.items() if value is not None})
    handler_file = Path(str(module.__file__)).resolve()
    spec = spec_from_handler(cls, Entrypoint(file=handler_file.name, attribute=cls.__name__), **fields)
    return Source(cls, handler_file, spec, path.parent)
