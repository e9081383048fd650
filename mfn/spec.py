"""ModelSpec: the one typed description of a model function that every renderer reads."""

from __future__ import annotations

import json
import re
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mfn.errors import SpecError
from mfn.handlers.declarations import Batching, Instances, Tensor, VersionPolicy, Warmup

if TYPE_CHECKING:
    # Only a type: the spec reads a handler class's attributes and sits below the handler contract.
    from mfn.handlers.base import Handler

SPEC_FORMAT = 1
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class Entrypoint(BaseModel):
    """Where the packaged handler lives inside a model version directory."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    file: str = Field(description="Handler source file name, relative to the version's handler/ directory.")
    attribute: str = Field(description="Name of the Handler subclass inside that file.")

    @field_validator("file")
    @classmethod
    def _plain_file_name(cls, file: str) -> str:
        # The servers import this file: a path could make them import code from outside the bundle.
        if not file.endswith(".py") or PurePosixPath(file).name != file or "\\" in file:
            raise ValueError(f"entrypoint file {file!r} must be a plain .py file name inside the bundle's handler/ "
                             "directory, e.g. 'handler.py'")
        return file


class ModelSpec(BaseModel):
    """Everything mfn knows about one version of a model function."""

    model_config = ConfigDict(frozen=True, extra="forbid", title="mfn ModelSpec")

    format: int = Field(SPEC_FORMAT, description="Version of this spec's layout.")
    name: str = Field(description="Model name on the server and in URLs: letters, digits, '_', '.', '-'; at most 64.")
    version: int = Field(1, ge=1, description="Model version, a positive integer.")
    inputs: tuple[Tensor, ...] = Field(min_length=1, description="Input tensors, per row.")
    outputs: tuple[Tensor, ...] = Field(min_length=1, description="Output tensors, per row.")
    batching: Batching = Field(Batching(), description="Batch limits and the dynamic batcher.")
    instances: tuple[Instances, ...] = Field((Instances(),), min_length=1, description="Instance groups.")
    artifacts: dict[str, str] = Field(
        {}, description="Files or directories shipped with the model: name -> path relative to the handler file."
    )
    requirements: tuple[str, ...] = Field((), description="pip requirements the handler needs at serving time.")
    warmup: Warmup | None = Field(None, description="Warm-up requests run when the model loads.")
    version_policy: VersionPolicy | None = Field(None, description="Versions served side by side; none: newest only.")
    execution_env: str | None = Field(
        None, description="Python environment for Triton's stub (EXECUTION_ENV_PATH): a packed env or venv path."
    )
    parameters: dict[str, str] = Field({}, description="Extra string parameters passed to the server config.")
    max_request_mb: int | None = Field(
        None, ge=1, description="Largest request (and answer) body the server must accept for this model, in MiB; "
        "none: computed from max_batch_size and the declared shapes (see mfn.runtime.codec.limits.body_limit).",
    )
    allow_pickle: bool = Field(
        False, description="Trust pickled objects inside the model file (a .pt2's pickled weights, constants or sample "
        "inputs run code when unpickled); off: a model file that holds any is refused, at packaging and at load.",
    )
    entrypoint: Entrypoint = Field(description="The handler class the server adapters load.")

    @field_validator("name")
    @classmethod
    def _url_safe_name(cls, name: str) -> str:
        if not _MODEL_NAME.fullmatch(name):
            raise ValueError(
                f"model name {name!r} must start with a letter or digit and use only letters, digits, '_', '.' "
                "and '-' (at most 64 characters), since it appears in URLs and directory names"
            )
        return name

    @field_validator("artifacts")
    @classmethod
    def _artifact_paths_relative(cls, artifacts: dict[str, str]) -> dict[str, str]:
        for name, path in artifacts.items():
            if not name.isidentifier():
                raise ValueError(f"artifact name {name!r} must be a Python identifier, e.g. 'weights'")
            if PurePosixPath(path).is_absolute() or not path:
                raise ValueError(f"artifact {name!r}: path {path!r} must be relative to the handler file")
            if ".." in PurePosixPath(path).parts:
                raise ValueError(f"artifact {name!r}: path {path!r} leaves the handler's directory; keep artifacts "
                                 "inside it (a copy, not a link to a file outside)")
        return artifacts

    @model_validator(mode="after")
    def _consistent(self) -> ModelSpec:
        for field_name in ("inputs", "outputs"):
            names = [tensor.name for tensor in getattr(self, field_name)]
            duplicates = sorted({name for name in names if names.count(name) > 1})
            if duplicates:
                raise ValueError(f"{field_name}: duplicate tensor names {duplicates}; give each tensor its own name")
        gpu_groups = [group for group in self.instances if group.kind == "gpu"]
        if len(gpu_groups) > 1 and any(group.gpus is None for group in gpu_groups):
            raise ValueError(
                "instances: with more than one GPU group each group must list its gpus, e.g. "
                "Instances(kind='gpu', count=1, gpus=[0]), so the groups do not overlap"
            )
        if self.warmup and self.warmup.batch_size > self.batching.max_batch_size:
            raise ValueError(
                f"warmup: batch_size {self.warmup.batch_size} exceeds batching.max_batch_size {self.batching.max_batch_size}"
            )
        return self

    @property
    def worker_count(self) -> int:
        """Server instances the groups ask for: `count` per listed GPU (or once for a group that lists none)."""
        return sum(group.count * len(group.gpus or (0,)) for group in self.instances)

    @property
    def uses_gpu(self) -> bool:
        """Whether any instance group asks for a GPU."""
        return any(group.kind == "gpu" for group in self.instances)

    def to_json(self) -> str:
        """Serialise deterministically: the same spec always gives the same bytes."""
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        """Read a spec written by `to_json`."""
        return cls.model_validate_json(text)


_HANDLER_FIELDS = (
    "name",
    "version",
    "inputs",
    "outputs",
    "batching",
    "instances",
    "artifacts",
    "requirements",
    "warmup",
    "version_policy",
    "execution_env",
    "parameters",
    "max_request_mb",
    "allow_pickle",
)


def spec_from_handler(cls: type[Handler], entrypoint: Entrypoint, **overrides: object) -> ModelSpec:
    """Build and validate the spec a handler class declares.

    Args:
        cls: The handler class.
        entrypoint: Where the handler will live in the package.
        **overrides: Field values that replace the class's declarations (e.g. from command-line flags).

    Raises:
        SpecError: naming each invalid field of the handler and how to fix it.
    """
    for required in ("name", "inputs", "outputs"):
        if required not in overrides and not hasattr(cls, required):
            raise SpecError(f"{cls.__qualname__}: declare `{required}` as a class attribute (see mfn.Handler)")
    fields = {name: getattr(cls, name) for name in _HANDLER_FIELDS if hasattr(cls, name)}
    for name, value in overrides.items():
        if value is None:
            continue
        declared = fields.get(name)
        if isinstance(value, dict) and isinstance(declared, BaseModel):
            # A partial override (e.g. only max_batch_size) keeps the handler's other batching settings.
            value = {**declared.model_dump(), **value}
        fields[name] = value
    try:
        return ModelSpec(**fields, entrypoint=entrypoint)
    except ValidationError as error:
        raise SpecError(describe_validation_error(error, cls.__qualname__)) from None


def describe_validation_error(error: ValidationError, owner: str) -> str:
    """Render pydantic's errors as one line per field: `Owner.inputs[0].dtype: message`."""
    items = error.errors()
    # A list whose items failed also reports itself as too short; the item errors say more.
    items = [
        item
        for item in items
        if not (item["type"] == "too_short" and any(other["loc"][: len(item["loc"])] == item["loc"] and other is not item for other in items))
    ]
    lines = [f"{owner} has {len(items)} invalid declaration(s):"]
    for item in items:
        path = owner
        for part in item["loc"]:
            path += f"[{part}]" if isinstance(part, int) else f".{part}"
        message = item["msg"].removeprefix("Value error, ")
        # Cross-field checks name their field at the start of the message; show it as part of the path.
        field_prefix = re.match(r"(\w+(?:\.\w+)*): ", message) if not item["loc"] else None
        if field_prefix:
            path += f".{field_prefix.group(1)}"
            message = message[field_prefix.end():]
        lines.append(f"  {path}: {message}")
    return "\n".join(lines)


def json_schema() -> str:
    """The ModelSpec JSON schema as checked into the repository."""
    return json.dumps(ModelSpec.model_json_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    print(json_schema(), end="")
