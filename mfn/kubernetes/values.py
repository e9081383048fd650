"""Chart values from the packaged models' specs: the only code that writes values for the helm/ chart.

The server command lines come from the same builders `mfn deploy --target local` uses, with the
container's paths and ports, so a pod runs exactly what a local deploy runs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mfn
from mfn.store import Store
from mfn.environment import ENV_ARCHIVE, WHEEL_DIR, canonical, wheel_name
from mfn.errors import MfnError
from mfn.model_repository.render import response_cache_bytes, uses_tritons_cache
from mfn.runtime.bundle import REQUIREMENTS_FILE
from mfn.monitoring import render
from mfn.runtime.codec.limits import body_limit
from mfn.servers.torchserve import launch as torchserve
from mfn.servers.triton import launch as triton
from mfn.spec import ModelSpec
from mfn.kinds import Server

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


@dataclass(frozen=True)
class PackagedEnvironment:
    """What one packaged model version carries for the pod's environment (see mfn.environment)."""

    location: str
    pins: tuple[str, ...]
    wheel: tuple[str, str] | None
    environment: tuple[str, str] | None


def packaged_environments(store: Store) -> list[PackagedEnvironment]:
    """Each mfn-packaged model version's pins, wheel and environment archive (member, SHA-256), by its path
    under the store; Triton's native models carry none."""
    from mfn.archiver.reading import read_member

    found = []
    for source in store.version_bundles():
        def member(name: str, source: Path = source) -> bytes | None:
            return read_member(source, name)

        requirements = member(REQUIREMENTS_FILE)
        wheel, environment = f"{WHEEL_DIR}/{wheel_name()}", ENV_ARCHIVE
        wheel_bytes, environment_bytes = member(wheel), member(environment)
        found.append(PackagedEnvironment(
            location=source.relative_to(store.root).as_posix(),
            pins=tuple((requirements or b"").decode().split()),
            wheel=(wheel, hashlib.sha256(wheel_bytes).hexdigest()) if wheel_bytes is not None else None,
            environment=(environment, hashlib.sha256(environment_bytes).hexdigest()) if environment_bytes is not None else None,
        ))
    return found


def package_manifests(store: Store) -> list[dict[str, str]]:
    """Each package unit's path under the store and the SHA-256 of its digest manifest: the pod checks the
    fetched packages against exactly what was verified (and signed) here.

    Raises:
        MfnError: a unit has no manifest (packaged by an older mfn).
    """
    from mfn.manifest import ManifestError, read_manifest

    found = []
    for unit in (unit for units in store.models.values() for unit in units):
        try:
            digest = hashlib.sha256(read_manifest(unit)).hexdigest()
        except ManifestError as error:
            raise MfnError(str(error)) from None
        found.append({"path": unit.relative_to(store.root).as_posix(), "sha256": digest})
    return found


def pod_requirements(store: Store) -> dict[str, Any]:
    """The chart's `requirements`: mfn's wheel from a package, the union of the packages' pins, and their
    environment archives (mode bundle when every mfn-packaged model carries one).

    Raises:
        MfnError: a package carries no wheel of this mfn (packaged by another version), or two packages pin
            one requirement differently.
    """
    packaged = packaged_environments(store)
    missing = [item.location for item in packaged if item.wheel is None]
    if missing:
        raise MfnError(f"{', '.join(missing)} carries no mfn {mfn.__version__} wheel ({WHEEL_DIR}/{wheel_name()}): "
                       "it was packaged by another mfn version; repackage it with this one")
    pins: dict[str, tuple[str, str]] = {}
    for item in packaged:
        for pin in item.pins:
            name = canonical(pin.split("==")[0])
            if name in pins and pins[name][0] != pin:
                raise MfnError(f"{item.location} pins {pin} but {pins[name][1]} pins {pins[name][0]}: one pod has one "
                               "environment; package both with the same versions installed")
            pins[name] = (pin, item.location)
    first = packaged[0] if packaged else None
    environments = [item for item in packaged if item.environment]
    bundled = bool(packaged) and len(environments) == len(packaged)
    return {
        "mode": "bundle" if bundled else "venv",
        "packages": sorted(pin for pin, _ in pins.values()),
        "wheel": {"from": first.location, "member": first.wheel[0], "sha256": first.wheel[1]} if first and first.wheel
        else {"from": "", "member": "", "sha256": ""},
        "environments": [{"from": item.location, "member": item.environment[0], "sha256": item.environment[1]}
                         for item in environments if item.environment],
    }


MIB = 1024 * 1024
# What a server needs before any model: the runtime, Python and mfn, per pod.
BASE_MEMORY_MIB = 512
SHM_FLOOR_MIB = 256
MAX_CPU_REQUEST = 8


def pod_sizes(store: Store, specs: list[ModelSpec]) -> dict[str, Any]:
    """Default requests and limits, and the /dev/shm limit, from the packages: each loaded copy of a model holds
    about its package in memory, local response caches may fill their size, TorchServe adds its JVM heap, and
    requests in flight pass through /dev/shm on Triton. Rough by design (a model may allocate far more than its files): documented, and `resources` set at
    install replaces them."""
    sizes = [_bundle_bytes(bundle) for bundle in store.version_bundles()]
    copies = sum(size * spec.worker_count for size, spec in zip(sizes, specs))
    limit = max((body_limit(spec) for spec in specs), default=0)
    memory_mib = BASE_MEMORY_MIB + -(-copies // MIB) + local_cache_mib(store.server, specs)
    if store.server == Server.TORCHSERVE:
        memory_mib += torchserve.default_jvm_heap_mb(limit)
    shm_mib = max(SHM_FLOOR_MIB, -(-2 * limit // MIB)) if store.server == Server.TRITON else SHM_FLOOR_MIB
    cpus = min(MAX_CPU_REQUEST, max(1, sum(spec.worker_count for spec in specs)))
    return {
        "resources": {"requests": {"cpu": str(cpus), "memory": f"{memory_mib}Mi"}, "limits": {"memory": f"{2 * memory_mib}Mi"}},
        "shmSizeLimit": f"{shm_mib}Mi",
    }


def local_cache_mib(server: str, specs: list[ModelSpec]) -> int:
    """Memory the local response caches may fill: Triton's own, once per server, and mfn's LRU per instance or worker."""
    in_server = response_cache_bytes(specs) // MIB if server == Server.TRITON else 0
    return in_server + sum(spec.cache.size_mb * spec.worker_count for spec in specs
                           if spec.cache is not None and spec.cache.kind == "local"
                           and not (server == Server.TRITON and uses_tritons_cache(spec)))


def _bundle_bytes(bundle: Path) -> int:
    return sum(path.stat().st_size for path in bundle.rglob("*") if path.is_file()) if bundle.is_dir() else bundle.stat().st_size


def gpus_needed(spec: ModelSpec) -> int:
    """GPUs one pod needs for a spec: the distinct listed ids, or one per GPU group that lists none."""
    listed = {gpu for group in spec.instances if group.kind == "gpu" for gpu in (group.gpus or ())}
    unlisted = sum(1 for group in spec.instances if group.kind == "gpu" and group.gpus is None)
    return len(listed) + unlisted


def target_concurrency(specs: list[ModelSpec]) -> int:
    """Requests one pod takes at once without queueing: each instance of each model runs a full batch at a time
    (one request where batching is off). Autoscaling aims at this many requests in flight per replica."""
    return max(1, sum(max(1, spec.batching.max_batch_size) * spec.worker_count for spec in specs))


def redis_models(specs: list[ModelSpec]) -> dict[str, bool]:
    """Each model with a Redis cache in any version, and whether every such version was packaged with a URL."""
    models: dict[str, bool] = {}
    for spec in specs:
        if spec.cache is not None and spec.cache.kind == "redis":
            models[spec.name] = models.get(spec.name, True) and spec.cache.url is not None
    return models


def chart_values(store: Store, specs: list[ModelSpec], release: str, model_uri: str | None, pvc: str | None) -> dict[str, Any]:
    """Values for one release serving every model in `store`."""
    ports = CONTAINER_PORTS[store.server]
    gpu_count = max((gpus_needed(spec) for spec in specs), default=0)
    values: dict[str, Any] = {
        "server": store.server,
        "ports": ports,
        "models": {"names": sorted(store.models), "uri": model_uri or "", "pvc": {"claimName": pvc or ""},
                   "manifests": package_manifests(store)},
        "requirements": pod_requirements(store),
        "gpu": {"count": gpu_count},
        "concurrency": {"fromPackages": target_concurrency(specs)},
        "cache": {"redisModels": redis_models(specs)},
        **pod_sizes(store, specs),
        "metrics": {"prometheusRule": {"groups": render.alert_rules(job=full_name(release))["groups"]}},
    }
    values.update(_SERVER_VALUES[store.server](store, specs, ports, gpu_count))
    return values


def _triton_values(store: Store, specs: list[ModelSpec], ports: dict[str, int], gpu_count: int) -> dict[str, Any]:
    return {
        "command": ["tritonserver"],
        "args": triton.server_args(
            repository=MODELS_DIR,
            ports=triton.Ports(**ports),
            models=sorted(store.models),
            shm_prefix="mfn_",
            address="0.0.0.0",
            gpus=gpu_count > 0,
            exit_timeout_s=DRAIN_TIMEOUT_S,
            response_cache_bytes=response_cache_bytes(specs),
        ),
        # The chart adds the restrictions itself, with keys from its Secret; these are the groups it guards.
        "triton": {"adminApis": triton.ADMIN_APIS, "inferenceApis": triton.INFERENCE_APIS},
    }


def _torchserve_values(store: Store, specs: list[ModelSpec], ports: dict[str, int], gpu_count: int) -> dict[str, Any]:
    all_ports = torchserve.Ports(inference=ports["http"], grpc=ports["grpc"], metrics=ports["metrics"], **TORCHSERVE_PRIVATE_PORTS)
    return {
        "command": torchserve.server_command(f"{CONFIG_DIR}/config.properties", f"{CONFIG_DIR}/log4j2.xml", MODELS_DIR, python="python3"),
        "args": [],
        "torchserve": {
            # Token authorization on; the chart's auth.inference=false switches it off. The probe reads the
            # server's key file. Keys outlive any pod: an expired key would fail the probe and restart the pod.
            "configProperties": torchserve.config_properties(
                all_ports, MODELS_DIR, auth=True, address="0.0.0.0", load_models="all", management_host="127.0.0.1",
                max_request_bytes=max(body_limit(spec) for spec in specs), token_expiration_min=POD_TOKEN_EXPIRATION_MIN,
            ),
            "logConfig": torchserve.LOG_CONFIG,
            "env": torchserve.server_settings("/tmp", "/tmp/logs"),
        },
    }


_SERVER_VALUES = {"triton": _triton_values, "torchserve": _torchserve_values}
