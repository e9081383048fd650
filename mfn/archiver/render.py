"""Render a ModelSpec to TorchServe's model-config.yaml, and say which of its settings TorchServe cannot express."""

from __future__ import annotations

import math
from typing import Any

from mfn.spec import ModelSpec, generated_header

ADAPTER_FILE = "mfn_torchserve_adapter.py"
CONFIG_FILE = "model-config.yaml"
DEFAULT_RESPONSE_TIMEOUT_S = 120
# TorchServe counts the batch delay in whole milliseconds and takes 0 for "unset", which it replaces
# with 100 ms: 1 ms is the shortest wait it honours.
MIN_BATCH_DELAY_MS = 1


def batch_delay_ms(spec: ModelSpec) -> int:
    """TorchServe's maxBatchDelay for the spec's queue delay: rounded up to whole ms, at least 1 (see MIN_BATCH_DELAY_MS)."""
    return max(MIN_BATCH_DELAY_MS, math.ceil(spec.batching.max_queue_delay_us / 1000))


def unexpressed(spec: ModelSpec) -> list[str]:
    """Declarations TorchServe cannot follow as written, each with what it does instead."""
    batching, notes = spec.batching, []
    delay_us = batching.max_queue_delay_us
    if batching.dynamic and delay_us % 1000:
        notes.append(f"batching.max_queue_delay_us={delay_us}: TorchServe counts whole milliseconds and waits up to "
                     f"{batch_delay_ms(spec)} ms")
    if batching.preferred_batch_sizes:
        notes.append(f"batching.preferred_batch_sizes={list(batching.preferred_batch_sizes)}: TorchServe has no "
                     "preferred sizes; it sends whatever has arrived when the batch is full or the delay is over")
    if batching.queue_policy is not None:
        notes.append("batching.queue_policy: TorchServe has no queue limits or timeouts per model; it is ignored")
    if spec.name.startswith(TOKEN_PREFIX):
        notes.append(f"name {spec.name!r}: TorchServe 0.12 takes management calls on /models/{TOKEN_PREFIX}... for its own "
                     "token API and refuses them, so mfn describe, scale, unload and set-default cannot reach this model "
                     "(serving it works); package with another --name to have them")
    return notes


# TorchServe 0.12's token authorization reads a management path under /models/token... as its token API.
TOKEN_PREFIX = "token"


def model_config(spec: ModelSpec) -> dict[str, Any]:
    """model-config.yaml as a dict, in the key order TorchServe documents."""
    workers = spec.worker_count
    config: dict[str, Any] = {
        "minWorkers": workers,
        "maxWorkers": workers,
        "batchSize": spec.batching.max_batch_size if spec.batching.dynamic else 1,
        "maxBatchDelay": batch_delay_ms(spec),
        "responseTimeout": DEFAULT_RESPONSE_TIMEOUT_S,
    }
    gpu_ids = sorted({gpu for group in spec.instances if group.kind == "gpu" for gpu in (group.gpus or ())})
    if spec.uses_gpu:
        config["deviceType"] = "gpu"
        if gpu_ids:
            config["deviceIds"] = gpu_ids
    elif all(group.kind == "cpu" for group in spec.instances):
        config["deviceType"] = "cpu"
    return config


def render_model_config(spec: ModelSpec) -> str:
    """The model-config.yaml text; keys keep their documented order so the file diffs well."""
    import yaml

    return generated_header(spec) + yaml.safe_dump(model_config(spec), sort_keys=False, default_flow_style=False)
