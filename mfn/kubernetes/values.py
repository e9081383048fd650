"""Chart values from the packaged models' specs: the only code that writes values for the helm/ chart.

The server command lines come from the same builders `mfn deploy --target local` uses, with the
container's paths and ports, so a pod runs exactly what a local deploy runs.
"""

from __future__ import annotations

from typing import Any

import mfn
from mfn.deploy.local import Store
from mfn.monitoring import render
from mfn.runtime.codec.limits import body_limit
from mfn.servers import torchserve, triton
from mfn.spec import ModelSpec

CHART_NAME = "mfn"
MODELS_DIR = "/models"
CONFIG_DIR = "/config"
CONTAINER_PORTS = {
    "triton": {"http": 8000, "grpc": 8001, "metrics": 8002},
    "torchserve": {"http": 8080, "grpc": 7070, "metrics": 8082},
}
# The chart's default drainTimeoutSeconds, written into Triton's command line; the chart puts its own
# value there, so an override at install time still reaches the server.
DRAIN_TIMEOUT_S = 30
# Ports inside the TorchServe pod that the Service does not expose (administration goes through port-forward).
TORCHSERVE_PRIVATE_PORTS = {"management": 8081, "grpc_management": 7071}
# TorchServe's keys in a pod last a year (its keys cannot be set, only regenerated through the management API).
POD_TOKEN_EXPIRATION_MIN = 60 * 24 * 365


def full_name(release: str) -> str:
    """The chart's resource name for a release (mirrors mfn.fullname in the chart's helpers)."""
    name = release if CHART_NAME in release else f"{release}-{CHART_NAME}"
    return name[:63].rstrip("-")


def gpus_needed(spec: ModelSpec) -> int:
    """GPUs one pod needs for a spec: the distinct listed ids, or one per GPU group that lists none."""
    listed = {gpu for group in spec.instances if group.kind == "gpu" for gpu in (group.gpus or ())}
    unlisted = sum(1 for group in spec.instances if group.kind == "gpu" and group.gpus is None)
    return len(listed) + unlisted


def chart_values(store: Store, specs: list[ModelSpec], release: str, model_uri: str | None, pvc: str | None) -> dict[str, Any]:
    """Values for one release serving every model in `store`."""
    ports = CONTAINER_PORTS[store.server]
    requirements = sorted({requirement for spec in specs for requirement in spec.requirements})
    gpu_count = max(gpus_needed(spec) for spec in specs)
    values: dict[str, Any] = {
        "server": store.server,
        "ports": ports,
        "models": {"names": sorted(store.models), "uri": model_uri or "", "pvc": {"claimName": pvc or ""}},
        "requirements": {"packages": [f"mfn=={mfn.__version__}", *requirements]},
        "gpu": {"count": gpu_count},
        "metrics": {"prometheusRule": {"groups": render.alert_rules(job=full_name(release))["groups"]}},
    }
    if store.server == "triton":
        values["command"] = ["tritonserver"]
        values["args"] = triton.server_args(
            repository=MODELS_DIR,
            ports=triton.Ports(**ports),
            models=sorted(store.models),
            shm_prefix="mfn_",
            address="0.0.0.0",
            gpus=gpu_count > 0,
            exit_timeout_s=DRAIN_TIMEOUT_S,
        )
        # The chart adds the restrictions itself, with keys from its Secret; these are the groups it guards.
        values["triton"] = {"adminApis": triton.ADMIN_APIS, "inferenceApis": triton.INFERENCE_APIS}
    else:
        all_ports = torchserve.Ports(
            inference=ports["http"], grpc=ports["grpc"], metrics=ports["metrics"], **TORCHSERVE_PRIVATE_PORTS
        )
        values["command"] = torchserve.server_command(
            f"{CONFIG_DIR}/config.properties", f"{CONFIG_DIR}/log4j2.xml", MODELS_DIR, python="python3"
        )
        values["args"] = []
        values["torchserve"] = {
            # Token authorization on; the chart's auth.inference=false switches it off. The probe reads the
            # server's key file. Keys outlive any pod: an expired key would fail the probe and restart the pod.
            "configProperties": torchserve.config_properties(
                all_ports, MODELS_DIR, auth=True, address="0.0.0.0", load_models="all", management_host="127.0.0.1",
                max_request_bytes=max(body_limit(spec) for spec in specs), token_expiration_min=POD_TOKEN_EXPIRATION_MIN,
            ),
            "logConfig": torchserve.LOG_CONFIG,
        }
    return values
