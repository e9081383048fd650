"""Triton's native backends for model files: a config for the framework's backend and the file where it looks.

For GPU clusters whose Triton image carries those backends (onnxruntime_onnx, pytorch_libtorch,
tensorflow_savedmodel); the Triton in nvidia-pytriton has only the Python backend, so these
repositories are checked here through model_config_pb2, not served.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from mfn.errors import MfnError
from mfn.handlers.tensorflow_models import is_saved_model
from mfn.handlers.declarations import Tensor
from mfn.model_repository.render import config_dict, model_warmup
from mfn.spec import ModelSpec, generated_header


@dataclass(frozen=True)
class NativePlatform:
    platform: str
    file_name: str


ONNX = NativePlatform("onnxruntime_onnx", "model.onnx")
LIBTORCH = NativePlatform("pytorch_libtorch", "model.pt")
SAVEDMODEL = NativePlatform("tensorflow_savedmodel", "model.savedmodel")
SUPPORTED = ".onnx (onnxruntime_onnx), .pt/.ts TorchScript (pytorch_libtorch), SavedModel directories (tensorflow_savedmodel)"


def native_platform(model_file: Path) -> NativePlatform:
    """The native backend that serves `model_file`.

    Raises:
        MfnError: naming the file and the formats Triton serves natively.
    """
    if is_saved_model(model_file):
        return SAVEDMODEL
    if model_file.suffix == ".onnx":
        return ONNX
    if model_file.suffix in (".pt", ".ts"):
        return LIBTORCH
    hint = " (export a Keras model to a SavedModel with model.export(path))" if model_file.suffix in (".keras", ".h5") else ""
    raise MfnError(f"{model_file.name}: Triton has no native backend for it{hint}; --native takes {SUPPORTED}")


def native_spec(spec: ModelSpec, platform: NativePlatform) -> ModelSpec:
    """The spec as the native backend names its tensors.

    Triton's PyTorch backend binds tensors by position through `<name>__<index>` names, so TorchScript
    inputs become e.g. `features__0` and outputs `output__0`; other backends keep the model's own names.
    """
    if platform is not LIBTORCH:
        return spec
    positional = re.compile(r"output(_\d+)?")
    if not all(positional.fullmatch(tensor.name) for tensor in spec.outputs):
        raise MfnError(
            f"{spec.name}: Triton's PyTorch backend serves a tensor or a tuple of tensors, and this model returns a "
            "dict; return a tuple, or serve it without --native"
        )
    return spec.model_copy(update={
        "inputs": tuple(_renamed(tensor, f"{tensor.name}__{index}") for index, tensor in enumerate(spec.inputs)),
        "outputs": tuple(_renamed(tensor, f"output__{index}") for index, tensor in enumerate(spec.outputs)),
    })


def render_native_config(spec: ModelSpec, platform: NativePlatform) -> str:
    """config.pbtxt for `platform`, tensors named as that backend needs."""
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2

    native = native_spec(spec, platform)
    config = config_dict(native)
    if native.warmup:
        config["model_warmup"] = [model_warmup(native.warmup, native.inputs)]
    del config["backend"]
    config.pop("parameters", None)  # EXECUTION_ENV_PATH and friends belong to the Python backend
    config.update({"platform": platform.platform, "default_model_filename": platform.file_name})
    parsed = json_format.ParseDict(config, model_config_pb2.ModelConfig())
    return generated_header(spec) + text_format.MessageToString(parsed)


def stage_native_model(spec: ModelSpec, model_file: Path, staging: Path) -> None:
    """Write config.pbtxt and <version>/<file or directory the backend expects> under `staging`."""
    platform = native_platform(model_file)
    version_dir = staging / str(spec.version)
    version_dir.mkdir(parents=True)
    if model_file.is_dir():
        shutil.copytree(model_file, version_dir / platform.file_name, copy_function=shutil.copyfile)
    else:
        shutil.copyfile(model_file, version_dir / platform.file_name)
    (staging / "config.pbtxt").write_text(render_native_config(spec, platform))


def _renamed(tensor: Tensor, name: str) -> Tensor:
    return tensor.model_copy(update={"name": name})
