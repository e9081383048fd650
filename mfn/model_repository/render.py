"""Render a ModelSpec to Triton's config.pbtxt through model_config_pb2 and protobuf's text format."""

from __future__ import annotations

from typing import Any

from mfn.handlers.declarations import Instances, QueuePolicy, Tensor, VersionPolicy, Warmup
from mfn.handlers.samples import VARIABLE_DIM_SAMPLE
from mfn.spec import ModelSpec, generated_header

_DATA_TYPES = {"BYTES": "TYPE_STRING"}
_INSTANCE_KINDS = {"cpu": "KIND_CPU", "gpu": "KIND_GPU", "auto": "KIND_AUTO"}
_TIMEOUT_ACTIONS = {"reject": "REJECT", "delay": "DELAY"}
WARMUP_NAME = "mfn_warmup"


def render_config(spec: ModelSpec) -> str:
    """Return the config.pbtxt text for a spec, validated by parsing it into `ModelConfig`.

    Raises:
        google.protobuf.json_format.ParseError: if the spec produced a field Triton does not know.
    """
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2

    config = json_format.ParseDict(config_dict(spec), model_config_pb2.ModelConfig())
    return generated_header(spec) + text_format.MessageToString(config)


def config_dict(spec: ModelSpec) -> dict[str, Any]:
    """The model config as a dict keyed by model_config.proto's field names."""
    config: dict[str, Any] = {
        "name": spec.name,
        "backend": "python",
        "max_batch_size": spec.batching.max_batch_size,
        "input": [_tensor(tensor) for tensor in spec.inputs],
        "output": [_tensor(tensor) for tensor in spec.outputs],
        "instance_group": [_instance_group(group) for group in spec.instances],
    }
    if spec.batching.dynamic:
        config["dynamic_batching"] = _dynamic_batching(spec)
    if spec.version_policy:
        config["version_policy"] = _version_policy(spec.version_policy)
    if uses_tritons_cache(spec):
        # Triton answers a hit before the request reaches the model; the server needs --cache-config (see
        # response_cache_bytes). Other caches run in mfn's adapter.
        config["response_cache"] = {"enable": True}
    if spec.streaming:
        # Each chunk is one response through the request's response sender; clients stream over gRPC
        # (ModelStreamInfer) or HTTP (generate_stream). Dynamic batching stays on: a batch streams together.
        config["model_transaction_policy"] = {"decoupled": True}
    # No model_warmup for mfn's adapter: it runs the spec's warm-up itself before initialize() returns, with the
    # same sample rows as on TorchServe and outside mfn's metrics. Native models get Triton's (model_warmup).
    parameters = dict(spec.parameters)
    if spec.execution_env:
        parameters["EXECUTION_ENV_PATH"] = spec.execution_env
    if parameters:
        config["parameters"] = {key: {"string_value": value} for key, value in sorted(parameters.items())}
    return config


def uses_tritons_cache(spec: ModelSpec) -> bool:
    """Whether Triton's own response cache serves the spec's local cache.

    Triton 2.51 keys a response by the model, version, and each input's name and bytes only. Not the shape: [1, 2]
    and [2, 1] of the same bytes would share an answer; where every input's per-row dims are fixed, the bytes fix
    the shape (and the config the dtype). Not the requested outputs either: an answer cut to the outputs one
    client asked for would be reused for every later request; with one output, every answer is whole. Other
    models cache in mfn's adapter, as on TorchServe.
    """
    return (spec.cache is not None and spec.cache.kind == "local" and len(spec.outputs) == 1
            and all(dim != -1 for tensor in spec.inputs for dim in tensor.shape))


def response_cache_bytes(specs: list[ModelSpec]) -> int:
    """The size of the server-wide response cache the models' local caches need (Triton has one cache for all
    models): each model's largest `size_mb` across its versions, summed; 0 when none caches locally."""
    largest: dict[str, int] = {}
    for spec in specs:
        if uses_tritons_cache(spec):
            largest[spec.name] = max(largest.get(spec.name, 0), spec.cache.size_mb if spec.cache else 0)
    return sum(largest.values()) << 20


def triton_data_type(dtype: str) -> str:
    """Triton's config enum name for one of mfn's dtype names."""
    return _DATA_TYPES.get(dtype, f"TYPE_{dtype}")


def _tensor(tensor: Tensor) -> dict[str, Any]:
    rendered: dict[str, Any] = {"name": tensor.name, "data_type": triton_data_type(tensor.dtype), "dims": exposed_dims(tensor)}
    if not tensor.shape:
        rendered["reshape"] = {"shape": []}
    return rendered


def exposed_dims(tensor: Tensor) -> list[int]:
    """Per-row dims as Triton's API shows them: Triton needs at least one, so a scalar per row is [1],
    reshaped to [] for the model (clients send and receive [batch, 1])."""
    return list(tensor.shape) or [1]


def _instance_group(group: Instances) -> dict[str, Any]:
    rendered: dict[str, Any] = {"count": group.count, "kind": _INSTANCE_KINDS[group.kind]}
    if group.gpus is not None:
        rendered["gpus"] = list(group.gpus)
    return rendered


def _dynamic_batching(spec: ModelSpec) -> dict[str, Any]:
    batching = spec.batching
    rendered: dict[str, Any] = {}
    if batching.preferred_batch_sizes:
        rendered["preferred_batch_size"] = list(batching.preferred_batch_sizes)
    if batching.max_queue_delay_us:
        rendered["max_queue_delay_microseconds"] = batching.max_queue_delay_us
    if batching.preserve_ordering:
        rendered["preserve_ordering"] = True
    if batching.queue_policy:
        rendered["default_queue_policy"] = _queue_policy(batching.queue_policy)
    return rendered


def _queue_policy(policy: QueuePolicy) -> dict[str, Any]:
    return {
        "timeout_action": _TIMEOUT_ACTIONS[policy.timeout_action],
        "default_timeout_microseconds": policy.timeout_us,
        "allow_timeout_override": policy.allow_timeout_override,
        "max_queue_size": policy.max_queue_size,
    }


def _version_policy(policy: VersionPolicy) -> dict[str, Any]:
    if policy.kind == "all":
        return {"all": {}}
    if policy.kind == "specific":
        return {"specific": {"versions": list(policy.versions)}}
    return {"latest": {"num_versions": policy.latest}}


def model_warmup(warmup: Warmup, inputs: tuple[Tensor, ...]) -> dict[str, Any]:
    """Triton's model_warmup entry for a model served without mfn's adapter (native backends)."""
    def sample(tensor: Tensor) -> dict[str, Any]:
        # Text has no meaningful random form; empty strings exercise the same code path.
        data_kind = "zero_data" if tensor.dtype == "BYTES" else "random_data"
        dims = [VARIABLE_DIM_SAMPLE if dim == -1 else dim for dim in exposed_dims(tensor)]
        return {"data_type": triton_data_type(tensor.dtype), "dims": dims, data_kind: True}

    return {
        "name": WARMUP_NAME,
        "batch_size": warmup.batch_size,
        "count": warmup.count,
        "inputs": {tensor.name: sample(tensor) for tensor in inputs},
    }
