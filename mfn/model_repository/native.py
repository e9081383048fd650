"""Triton's native backends for model files: a config for onnxruntime_onnx and the file where Triton wants it.

For GPU clusters whose Triton image carries those backends; the Triton in nvidia-pytriton has only the
Python backend, so these repositories are checked here through model_config_pb2, not served.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from mfn.model_repository.render import HEADER, config_dict
from mfn.spec import ModelSpec

PLATFORMS = {".onnx": ("onnxruntime_onnx", "model.onnx")}


def render_native_config(spec: ModelSpec, suffix: str) -> str:
    """config.pbtxt for the native backend of a model file with `suffix`."""
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2

    platform, file_name = PLATFORMS[suffix]
    config = config_dict(spec)
    del config["backend"]
    config.pop("parameters", None)  # EXECUTION_ENV_PATH and friends belong to the Python backend
    config.update({"platform": platform, "default_model_filename": file_name})
    parsed = json_format.ParseDict(config, model_config_pb2.ModelConfig())
    return HEADER.format(name=spec.name, version=spec.version) + text_format.MessageToString(parsed)


def stage_native_model(spec: ModelSpec, model_file: Path, staging: Path) -> None:
    """Write config.pbtxt and <version>/<file Triton expects> under `staging`."""
    _, file_name = PLATFORMS[model_file.suffix]
    (staging / str(spec.version)).mkdir(parents=True)
    shutil.copyfile(model_file, staging / str(spec.version) / file_name)
    (staging / "config.pbtxt").write_text(render_native_config(spec, model_file.suffix))
