"""What a handler declares about itself: tensors, batching, instances, versions, warm-up.

These are the typed building blocks of `mfn.spec.ModelSpec`; a handler class uses them directly,
so a mistake is reported by the same validation whether it is found at import or at packaging.
"""

from __future__ import annotations

import difflib
import re
import typing
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mfn.handlers.dtypes import canonical_dtype

_FROZEN = ConfigDict(frozen=True, extra="forbid")
_TENSOR_NAME = r"^[A-Za-z_][A-Za-z0-9_.]*$"


class Tensor(BaseModel):
    """One named input or output tensor, described per row: the batch dimension is implied."""

    model_config = _FROZEN

    name: str = Field(description="Tensor name clients use; letters, digits, '_' and '.'.", pattern=_TENSOR_NAME)
    dtype: str = Field(description="Triton data type (BOOL, INT8..INT64, UINT8..UINT64, FP16, FP32, FP64, BYTES).")
    shape: tuple[int, ...] = Field(description="Per-row shape without the batch dimension; -1 marks a variable dimension.")

    def __init__(self, name: str | None = None, dtype: object = None, shape: object = None, /, **data: object) -> None:
        positional = {"name": name, "dtype": dtype, "shape": shape}
        super().__init__(**{key: value for key, value in positional.items() if value is not None}, **data)

    @model_validator(mode="before")
    @classmethod
    def _readable_declaration(cls, data: object) -> object:
        # Before pydantic's own checks, whose words ("Input should be a valid tuple") name neither the tensor
        # nor the fix: each problem becomes one line, "Tensor 'x' shape: ...".
        if not isinstance(data, dict):
            return data
        name, checked = data.get("name"), dict(data)
        subject = f"Tensor {name!r}" if isinstance(name, str) else "Tensor"
        if isinstance(name, str) and not re.fullmatch(_TENSOR_NAME, name):
            raise ValueError(f"{subject} name: use letters, digits, '_' and '.', starting with a letter or '_'")
        for field, example in (("dtype", "'FP32'"), ("shape", "(4,), or () for one value per row")):
            if field not in data:
                raise ValueError(f"{subject} {field}: missing; give it, e.g. {example}")
        if "dtype" in data:
            try:
                checked["dtype"] = canonical_dtype(data["dtype"])
            except ValueError as error:
                raise ValueError(f"{subject} dtype: {error}") from None
        if "shape" in data:
            problem = shape_problem(data["shape"])
            if problem:
                raise ValueError(f"{subject} shape: {problem}")
            checked["shape"] = tuple(int(dim) for dim in data["shape"])
        return checked


def shape_problem(shape: object) -> str | None:
    """How `shape` fails to be a per-row shape (a list or tuple of positive dimensions or -1), with the fix;
    None for a valid one."""
    rule = "shapes list the dimensions of one row, without the batch dimension"
    if isinstance(shape, int) and not isinstance(shape, bool):
        return f"{shape} is not a shape; write ({shape},): {rule}"
    if not isinstance(shape, (list, tuple)):
        return f"{shape!r} is not a shape; write a tuple of dimensions such as (4,): {rule}"
    if any(dim is None for dim in shape):
        return f"{list(shape)}: use -1 for a dimension of any length, e.g. {[-1 if dim is None else dim for dim in shape]}"
    if any(isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) for dim in shape):
        return f"{list(shape)}: each dimension is a whole number, or -1 for any length"
    if any(dim == 0 or dim < -1 for dim in shape):
        return f"{list(shape)}: each dimension is positive, or -1 for any length"
    return None


class QueuePolicy(BaseModel):
    """How the dynamic batcher treats requests that wait too long or arrive when the queue is full."""

    model_config = _FROZEN

    max_queue_size: int = Field(0, ge=0, description="Requests held before new ones are rejected; 0 means unbounded.")
    timeout_us: int = Field(0, ge=0, description="Time a request may wait in the queue, in microseconds; 0 means no limit.")
    timeout_action: Literal["reject", "delay"] = Field("reject", description="What happens to a request past its timeout.")
    allow_timeout_override: bool = Field(False, description="Whether a request may set its own shorter timeout.")


class Batching(BaseModel):
    """Batching limits and the server-side dynamic batcher."""

    model_config = _FROZEN

    max_batch_size: int = Field(8, ge=1, description="Most rows one predict call receives.")
    dynamic: bool = Field(True, description="Let the server combine concurrent requests into one predict call.")
    max_queue_delay_us: int = Field(
        0, ge=0, description="How long the batcher may hold a request to fill a batch, in microseconds."
    )
    preferred_batch_sizes: tuple[int, ...] = Field((), description="Batch sizes the batcher should aim for.")
    preserve_ordering: bool = Field(False, description="Return responses in the order requests arrived.")
    queue_policy: QueuePolicy | None = Field(None, description="Queue limits and timeouts; none means the server's default.")
    isolate_failures: bool = Field(
        True,
        description="When predict raises on a batch of several requests, re-run its halves until the failing "
        "request(s) are found, so only they get the error. Turn off for handlers whose predict has side effects "
        "that must not run twice; then the whole batch fails together.",
    )

    @model_validator(mode="after")
    def _preferred_within_max(self) -> Batching:
        too_big = [size for size in self.preferred_batch_sizes if size > self.max_batch_size]
        if too_big:
            raise ValueError(
                f"preferred_batch_sizes {too_big} exceed max_batch_size {self.max_batch_size}: "
                "lower them or raise max_batch_size"
            )
        if any(size < 1 for size in self.preferred_batch_sizes):
            raise ValueError("preferred_batch_sizes must be positive")
        if not self.dynamic and (self.preferred_batch_sizes or self.max_queue_delay_us or self.queue_policy):
            raise ValueError("preferred_batch_sizes, max_queue_delay_us and queue_policy need dynamic=True")
        return self


class Instances(BaseModel):
    """A group of model instances (Triton) or workers (TorchServe) on one kind of device."""

    model_config = _FROZEN

    kind: Literal["cpu", "gpu", "auto"] = Field("cpu", description="Device kind; 'auto' lets the server choose.")
    count: int = Field(1, ge=1, description="Instances in this group (per listed GPU for GPU groups).")
    gpus: tuple[int, ...] | None = Field(None, description="GPU ids for a 'gpu' group; none means every visible GPU.")

    @model_validator(mode="after")
    def _gpus_only_for_gpu_groups(self) -> Instances:
        if self.gpus is not None and self.kind != "gpu":
            raise ValueError(f"gpus={list(self.gpus)} is only valid with kind='gpu', not kind={self.kind!r}")
        if self.gpus is not None and (not self.gpus or any(gpu < 0 for gpu in self.gpus)):
            raise ValueError("gpus must list one or more non-negative GPU ids")
        return self


class VersionPolicy(BaseModel):
    """Which versions of a model the server loads when several are packaged side by side."""

    model_config = _FROZEN

    kind: Literal["latest", "all", "specific"] = Field("latest", description="Serve the newest N, all, or listed versions.")
    latest: int = Field(1, ge=1, description="How many of the newest versions to serve when kind is 'latest'.")
    versions: tuple[int, ...] = Field((), description="Versions to serve when kind is 'specific'.")

    @model_validator(mode="after")
    def _versions_match_kind(self) -> VersionPolicy:
        if self.kind == "specific" and not self.versions:
            raise ValueError("kind='specific' needs versions, e.g. VersionPolicy(kind='specific', versions=(1, 2))")
        if self.kind != "specific" and self.versions:
            raise ValueError("versions is only used with kind='specific'")
        return self

    def select(self, versions: Sequence[int]) -> list[int]:
        """The versions among `versions` this policy serves, newest first (Triton's rule, which mfn applies on
        TorchServe too)."""
        newest_first = sorted(set(versions), reverse=True)
        if self.kind == "all":
            return newest_first
        if self.kind == "specific":
            return [version for version in newest_first if version in self.versions]
        return newest_first[: self.latest]

    @classmethod
    def parse(cls, text: str) -> VersionPolicy:
        """Parse the command-line form: 'all', 'latest' / 'latest:N', or 'specific:1,2'."""
        kind, _, argument = text.partition(":")
        numbers = argument.replace(",", "")
        if kind == "all" and not argument:
            return cls(kind="all")
        if kind == "latest" and (not argument or argument.isdigit() and int(argument) >= 1):
            return cls(kind="latest", latest=int(argument or 1))
        if kind == "specific" and numbers.isdigit() and "" not in argument.split(","):
            return cls(kind="specific", versions=tuple(int(v) for v in argument.split(",")))
        raise ValueError(f"version policy {text!r}: use 'all', 'latest[:N]' or 'specific:1,2' (N and versions are "
                         "positive whole numbers)")


class Warmup(BaseModel):
    """Requests the server runs through the model at load time, so the first real request is not slow."""

    model_config = _FROZEN

    batch_size: int = Field(1, ge=1, description="Rows in each warm-up request.")
    count: int = Field(
        2, ge=1, description="How many times the warm-up request is run; TorchScript and other JIT runtimes "
        "reach their steady speed only after a couple of calls.",
    )


REDIS_URL_ENV = "MFN_CACHE_REDIS_URL"


class Cache(BaseModel):
    """Answers kept and reused for identical requests, so the model runs once per distinct input.

    The key covers the model's name, version and spec, its handler source and artifacts, and every input's dtype,
    shape and bytes; only successful answers are kept, and a cache that fails (Redis down or slow) is skipped,
    never failing a request.
    """

    model_config = _FROZEN

    kind: Literal["local", "redis"] = Field(
        "local", description="'local': inside the server (Triton's own response cache for models with one output "
        "and fixed per-row dims, else an LRU per model instance; on TorchServe an LRU per worker); 'redis': one Redis "
        "shared by every replica and server that serves this model version.",
    )
    size_mb: int = Field(64, ge=1, description="kind='local': most MiB of answers kept (per worker on TorchServe); "
                         "the least recently used go first.")
    url: str | None = Field(
        None, description=f"kind='redis': redis:// or rediss:// URL without credentials, e.g. redis://cache:6379/0. "
        f"The environment variable {REDIS_URL_ENV}, where the server runs, overrides it and may carry credentials "
        "(the chart sets it from a Secret); credentials are never packaged.",
    )
    ttl_s: int = Field(3600, ge=1, description="kind='redis': seconds an answer stays in Redis.")
    key_prefix: str = Field("mfn", pattern=r"^[A-Za-z0-9_.:-]{1,64}$",
                            description="kind='redis': prefix of every key mfn writes, e.g. one per team or stage.")
    timeout_ms: int = Field(
        50, ge=1, description="kind='redis': longest wait for each step with Redis (connecting, a batch's lookup, its "
        "store); past it the answers are computed instead (and the failure counted).",
    )

    @field_validator("url")
    @classmethod
    def _no_credentials(cls, url: str | None) -> str | None:
        if url is None:
            return url
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"url {url!r}: use a redis://, rediss:// or unix:// URL, e.g. redis://cache:6379/0")
        options = {name for name, _, _ in (item.partition("=") for item in parts.query.split("&") if item)}
        if options - {"db"}:
            # redis-py reads options from the query, credentials and timeouts among them, over mfn's settings.
            raise ValueError(f"url {url!r}: no query options but db; set timeouts with timeout_ms, and credentials "
                             f"in {REDIS_URL_ENV} where the server runs")
        if parts.password or parts.username:
            raise ValueError(f"credentials must not be packaged; give the URL without them and set "
                             f"{REDIS_URL_ENV} (with credentials) where the server runs, e.g. from a Secret")
        return url

    @model_validator(mode="after")
    def _settings_match_kind(self) -> Cache:
        # Compared with the defaults, not with the fields given: a spec read back from JSON gives every field.
        defaults = {name: field.default for name, field in type(self).model_fields.items()}
        redis_only = sorted(name for name in ("url", "ttl_s", "key_prefix", "timeout_ms")
                            if getattr(self, name) != defaults[name])
        if self.kind == "local" and redis_only:
            raise ValueError(f"{', '.join(redis_only)}: only for kind='redis' (a local cache has no "
                             "expiry: answers leave it least recently used first once size_mb is full)")
        if self.kind == "redis" and self.size_mb != defaults["size_mb"]:
            raise ValueError("size_mb: only for kind='local'; Redis limits its own memory (maxmemory)")
        return self

    @classmethod
    def parse(cls, text: str) -> Cache | None:
        """Parse the command-line form: 'off', 'local', 'local,size_mb=128', 'redis,url=redis://host:6379/0,ttl_s=60'."""
        kind, *settings = [part.strip() for part in text.split(",")]
        if kind == "off" and not settings:
            return None
        if kind not in ("local", "redis"):
            raise ValueError(f"cache {text!r}: start with 'local', 'redis' or 'off', e.g. 'redis,url=redis://cache:6379/0'")
        fields: dict[str, str] = {}
        for setting in settings:
            key, equals, value = setting.partition("=")
            if not equals or key not in cls.model_fields or key == "kind":
                known = ", ".join(name for name in cls.model_fields if name != "kind")
                raise ValueError(f"cache {text!r}: {setting!r} is not KEY=VALUE with a key among {known}")
            fields[key] = value
        try:
            return cls(kind=kind, **fields)
        except ValidationError as error:
            raise ValueError(f"cache {text!r}: " + "; ".join(
                f"{'.'.join(str(part) for part in item['loc']) or 'cache'}: {item['msg'].removeprefix('Value error, ')}"
                for item in error.errors())) from None


# Fields of a declaration object written as class attributes of their own (max_batch_size = 64): each with the
# declaration that holds it. Generic names (kind, count, url, batch_size, ...) are left to the handler's own use.
_NESTED_FIELDS = {
    **{field: "batching = mfn.Batching({field}={value})" for field in Batching.model_fields if field != "dynamic"},
    **{field: "batching = mfn.Batching(queue_policy=mfn.QueuePolicy({field}={value}))" for field in QueuePolicy.model_fields},
    "gpus": "instances = [mfn.Instances(kind='gpu', gpus={value})]",
    **{field: "cache = mfn.Cache(kind='redis', {field}={value})" for field in ("ttl_s", "key_prefix")},
    "size_mb": "cache = mfn.Cache(size_mb={value})",
}
# Which declaration holds an object of each declaration type, for one put under another name.
_HOLDERS = {Tensor: "inputs` or `outputs", Batching: "batching", Instances: "instances", Warmup: "warmup",
            VersionPolicy: "version_policy", Cache: "cache", QueuePolicy: "batching = mfn.Batching(queue_policy=...)"}


def misdeclared(attributes: Mapping[str, object], declarations: Mapping[str, object]) -> dict[str, str]:
    """The attributes of a handler class body that look like declarations but are none, each with what to write
    instead; empty when there are none. `declarations` are the names a handler may declare, with their types.

    An attribute looks like a declaration when its name is public (no leading '_'), its value is not a method,
    property or class, and it is one of: a field of a declaration object (`max_batch_size`, `gpus`, `ttl_s`, ...),
    a name that difflib finds close to a declaration's and a value that declaration would take (`batchng =
    mfn.Batching(...)`, `input = [...]`, `requirement = ["torch"]`, not `cached = {}`), or an mfn declaration
    object or a list of them (`mfn.Batching(...)`, `[mfn.Tensor(...)]`) under any other name. A handler keeps its
    own class attributes clear of these with a leading '_', or sets its state on `self` in `setup`.
    """
    problems = {}
    for attribute, value in attributes.items():
        if attribute in declarations or attribute.startswith("_") or callable(value) \
                or isinstance(value, (staticmethod, classmethod, property)):
            continue
        items = value if isinstance(value, (list, tuple)) and value else [value]
        holder = next((holder for kind, holder in _HOLDERS.items() if all(isinstance(item, kind) for item in items)), None)
        close = [name for name in difflib.get_close_matches(attribute, declarations, n=1, cutoff=0.8)
                 if _fits(value, declarations[name])]
        if attribute in _NESTED_FIELDS:
            fix = _NESTED_FIELDS[attribute].format(field=attribute, value=repr(value))
            problems[attribute] = f"`{attribute}` is not a declaration; write `{fix}`"
        elif close:
            problems[attribute] = f"`{attribute}` is not a declaration; did you mean `{close[0]}`?"
        elif holder:
            problems[attribute] = (f"`{attribute}` holds mfn.{type(items[0]).__name__} under a name mfn does "
                                   f"not read; name it `{holder}`")
    return problems


def unknown_keywords(keywords: dict[str, object], declarations: Mapping[str, object]) -> list[str]:
    """What is wrong with keywords of @mfn.function that name no declaration, each with the declaration meant."""
    unknown = {key: value for key, value in keywords.items() if key not in declarations}
    problems = misdeclared(unknown, declarations)
    for key in unknown.keys() - problems.keys():
        close = difflib.get_close_matches(key, declarations, n=1, cutoff=0.6)
        problems[key] = f"`{key}` is not a declaration; " + (
            f"did you mean `{close[0]}`?" if close else f"declarations are {', '.join(declarations)}")
    return [problems[key] for key in unknown]


def _fits(value: object, annotation: object) -> bool:
    """Whether `value` is, as it stands, a value of the type `annotation`: declaration objects themselves (not
    their dict form), other values without coercion (lists read as tuples)."""
    from pydantic import TypeAdapter

    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    models = tuple(kind for kind in arguments or (annotation,) if isinstance(kind, type) and issubclass(kind, BaseModel))
    if models and origin is tuple:
        return isinstance(value, (list, tuple)) and bool(value) and all(isinstance(item, models) for item in value)
    if models:
        return isinstance(value, models)
    try:
        TypeAdapter(typing.cast(typing.Any, annotation)).validate_python(tuple(value) if isinstance(value, list) else value, strict=True)
    except (ValidationError, TypeError):
        return False
    return True
