"""Local deploys on the tritonserver bundled with nvidia-pytriton."""

from __future__ import annotations

from collections.abc import Sequence
import json
import math
import os
import secrets
import signal
import subprocess
from typing import TYPE_CHECKING
import time
from pathlib import Path

from mfn.local import state
from mfn.local.launching import describe_failure, http_json, launch, load_timeout_s
from mfn.local.state import Deployment, read_key
from mfn.store import Store, triton_config
from mfn.local.versions import ServedVersions
from mfn.errors import DeployError, MfnError
from mfn.servers import secret_args
from mfn.servers.triton import launch as triton
from mfn.servers.process import children

if TYPE_CHECKING:
    from mfn.local.supervision import Plan

STUB_SCRIPT = "model.py"
KEY_FILE = "keys.json"
SECRET_ARGS_FILE = "server.args"
PRIVATE_LIBRARIES = "lib"
RELOAD_PARAMETER = "mfn_generation"
# Logged by tritonserver 2.51 once no inference is in flight during shutdown; only unloading is left then.
UNLOADING_MARKER = "All models are stopped, unloading models"
UNLOAD_GRACE_S = 3.0
# Queries made between loads: while other models load (each stub importing its framework on every core), Triton's
# HTTP threads answer even these late, and a deploy must not fail for it.
QUERY_TIMEOUT_S = 30.0

USES_SHARED_MEMORY = True


def start(
    plan: Plan, store: Store, workdir: Path, preload: Sequence[str] = (),
) -> tuple[Deployment, subprocess.Popen]:
    """Start tritonserver; models are loaded one by one afterwards so each failure has its reason.

    A restart passes `preload`: Triton then loads those models before it opens its ports, so clients that
    reconnect find them instead of 'unknown model'. On SIGTERM Triton answers the requests it has accepted for up
    to the options' `drain_timeout_s` before it exits. tritonserver 2.51 has no setting for a body limit, so
    `max_request_bytes` is not enforced by the server; `jvm_heap_mb` is TorchServe's alone.
    """
    name, shm_prefix, options = plan.name, plan.shm_prefix, plan.options
    install = triton.find_triton()
    backend_dir = triton.prepare_backend_directory(install, workdir / "backends")
    keys = _keys(workdir / KEY_FILE, options.auth)
    secrets_library = secret_args.preload_library(state.mfn_home() / PRIVATE_LIBRARIES)
    restrictions = triton.restricted_args(keys["management"]["key"], keys.get("inference", {}).get("key"))
    cache_bytes = plan.response_cache_bytes
    if cache_bytes is None:  # a restart: the specs may have changed since the deploy (`mfn load` of a new model)
        from mfn.model_repository.render import response_cache_bytes

        cache_bytes = response_cache_bytes(store.specs())

    def command(ports: dict[str, int]) -> tuple[list[str], dict[str, str]]:
        args = triton.server_args(
            repository=str(store.root),
            ports=triton.Ports(**ports),
            models=list(preload),
            backend_directory=str(backend_dir),
            cache_directory=str(install.caches),
            shm_prefix=shm_prefix,
            exit_timeout_s=math.ceil(options.drain_timeout_s),
            address=options.host,
            response_cache_bytes=cache_bytes,
        )
        env = secret_args.hide(triton.server_environment(install), restrictions, workdir / SECRET_ARGS_FILE, secrets_library)
        return [str(install.binary), *args], env

    deployment, process = launch(
        name, "triton", workdir, ("http", "grpc", "metrics"), command, "/v2/health/live", store.root, shm_prefix,
        ports=options.ports, host=options.host,
    )
    deployment.key_file = str(workdir / KEY_FILE)
    deployment.response_cache_bytes = cache_bytes
    return deployment, process


def _keys(key_file: Path, auth: bool) -> dict:
    """This deployment's keys, made once and kept across restarts (clients hold them); the file is 0600.

    The admin key always exists: the model-repository API loads code, so it is never open. The inference key
    exists with `auth` (TorchServe's key file has the same layout, so one reader serves both servers).
    """
    if key_file.is_file():
        return json.loads(key_file.read_text())
    keys = {"management": {"key": secrets.token_urlsafe(24)}}
    if auth:
        keys["inference"] = {"key": secrets.token_urlsafe(24)}
    descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(keys, handle)
    return keys


def serve_versions(deployment: Deployment, store: Store, model: str, served: ServedVersions, fresh: bool = False) -> None:
    """Serve exactly `served.versions` of `model`, with its config.pbtxt as it is now on disk (mfn.local.versions
    decides which). Versions served before answer until the new instances are ready: no gap.

    Triton answers a request without a version with the newest version it serves and has no switch for another:
    mfn's clients send `served.default` where it is not the newest (see mfn.client.versions). `fresh` builds new
    instances even when the versions do not change (`mfn reload`).

    Raises:
        DeployError: the server's reason; or the model asks for Triton's response cache and the server started
            without one (Triton would serve it uncached without a word; the cache is sized when the server starts).
    """
    from mfn.model_repository.render import uses_tritons_cache

    if not deployment.response_cache_bytes and any(uses_tritons_cache(spec) for spec in store.specs([model])):
        raise DeployError(f"{model} caches answers in Triton's response cache, and {deployment.name}'s server started "
                          f"without one (it is sized from the models a server starts with): deploy again "
                          f"(`mfn deploy {store.root} --name {deployment.name}`) to serve it with its cache")
    if not fresh and tuple(served_versions(deployment, model)) == served.versions:
        return
    config = triton_config(store.models[model][0] / "config.pbtxt")
    config["version_policy"] = {"specific": {"versions": list(served.versions)}}
    _load_with(deployment, model, config, ", ".join(f"v{version}" for version in served.versions))
    code, body = http_json("GET", f"{deployment.http_url}/v2/models/{model}/ready", timeout_s=QUERY_TIMEOUT_S)
    if code != 200:
        raise DeployError(f"model {model!r} loaded but is not ready: {describe_failure(code, body, deployment)}")


def reload_model(deployment: Deployment, store: Store, model: str) -> None:
    """Bring back a model whose stub died, swapping in new instances before the old ones go.

    A plain `load` of a loaded model is a no-op unless its files changed, and unload+load leaves a gap in
    which requests get 404. Loading the model's own config with a new `mfn_generation` parameter makes Triton
    build new instances and switch to them only once they are ready.
    """
    code, config = http_json("GET", f"{deployment.http_url}/v2/models/{model}/config", timeout_s=QUERY_TIMEOUT_S,
                             token=read_key(deployment, "management"))
    if code != 200 or not isinstance(config, dict):
        code, body = http_json("POST", f"{deployment.http_url}/v2/repository/models/{model}/load",
                               timeout_s=load_timeout_s(deployment), token=read_key(deployment, "management"))
        if code != 200:
            raise DeployError(f"model {model!r} failed to load: {describe_failure(code, body, deployment)}")
        return
    _load_with(deployment, model, config, "reload")


def _config(deployment: Deployment, model: str) -> dict:
    code, config = http_json("GET", f"{deployment.http_url}/v2/models/{model}/config", timeout_s=QUERY_TIMEOUT_S,
                             token=read_key(deployment, "management"))
    if code != 200 or not isinstance(config, dict):
        raise DeployError(f"model {model!r} is not loaded in {deployment.name}: {describe_failure(code, config, deployment)}")
    return config


def _load_with(deployment: Deployment, model: str, config: dict, what: str) -> None:
    """Load `model` with a changed config: Triton builds the new instances and versions before it retires the old."""
    config.setdefault("parameters", {})[RELOAD_PARAMETER] = {"string_value": str(time.time_ns())}
    body = json.dumps({"parameters": {"config": json.dumps(config)}}).encode()
    url = f"{deployment.http_url}/v2/repository/models/{model}/load"
    code, reply = http_json("POST", url, timeout_s=load_timeout_s(deployment), body=body, token=read_key(deployment, "management"))
    if code != 200:
        raise DeployError(f"model {model!r} failed to load ({what}): {describe_failure(code, reply, deployment)}")


def served_versions(deployment: Deployment, model: str) -> list[int]:
    """The versions of `model` the server has ready, oldest first."""
    code, index = http_json("POST", f"{deployment.http_url}/v2/repository/index", timeout_s=QUERY_TIMEOUT_S, body=b"{}",
                            token=read_key(deployment, "management"))
    if code != 200 or not isinstance(index, list):
        raise DeployError(f"cannot list the models of {deployment.name}: {describe_failure(code, index, deployment)}")
    return sorted(int(entry["version"]) for entry in index
                  if entry.get("name") == model and entry.get("state") == "READY" and entry.get("version"))


def default_version(deployment: Deployment, model: str) -> int | None:
    """The version Triton itself answers requests without a version with: the newest it has ready."""
    versions = served_versions(deployment, model)
    return versions[-1] if versions else None


def unload_model(deployment: Deployment, model: str) -> None:
    """Stop serving `model`, every version (one version goes through `serve_versions`)."""
    url = f"{deployment.http_url}/v2/repository/models/{model}/unload"
    code, body = http_json("POST", url, timeout_s=load_timeout_s(deployment), body=b"{}", token=read_key(deployment, "management"))
    if code != 200:
        raise DeployError(f"{model} could not be unloaded: {describe_failure(code, body, deployment)}")


def scale_model(deployment: Deployment, model: str, count: int, version: int | None = None) -> None:
    """Run `count` instances per instance group (every version: Triton's instance groups are per model)."""
    if version is not None:
        raise MfnError("Triton's instance count belongs to the model, not to one version: scale without --version")
    config = _config(deployment, model)
    for group in config.get("instance_group", []):
        group["count"] = count
    _load_with(deployment, model, config, f"scaling to {count} instances")


def model_details(deployment: Deployment, model: str) -> dict:
    """What `mfn describe` shows of a loaded model, from the server's own config."""
    config = _config(deployment, model)
    groups = [f"{group.get('kind', 'KIND_AUTO').removeprefix('KIND_').lower()}:{group.get('count', 1)}"
              for group in config.get("instance_group", [])]
    batching = config.get("dynamic_batching")
    return {
        "instances": groups,
        "max_batch_size": config.get("max_batch_size", 0),
        "max_queue_delay_us": int((batching or {}).get("max_queue_delay_microseconds", 0)) if batching is not None else None,
    }


def worker_processes(deployment: Deployment, server_pid: int) -> dict[int, tuple[str, bool]]:
    """The server's Python stubs: pid → (model, alive).

    Triton neither restarts nor reaps a stub that dies, and keeps reporting the model ready; a stub left as
    a zombie child is how its death shows. A zombie has no command line (its model is ""), so callers remember
    the model of each live pid they have seen.
    """
    stubs = {}
    repository = Path(deployment.repository)
    for pid, (process_state, command) in children(server_pid).items():
        if process_state == "Z":
            stubs[pid] = ("", False)
        elif len(command) > 1 and command[1].endswith(STUB_SCRIPT):
            model_dir = Path(command[1]).parent.parent
            if model_dir.parent == repository:
                stubs[pid] = (model_dir.name, True)
    return stubs


def model_problem(deployment: Deployment, model: str) -> str | None:
    """Why `model` cannot answer now, from the server's own view, or None when it says the model is ready."""
    code, body = http_json("GET", f"{deployment.http_url}/v2/models/{model}/ready", timeout_s=5.0)
    return None if code == 200 else describe_failure(code, body, deployment) or f"HTTP {code}"


def drain(deployment: Deployment, process: subprocess.Popen, timeout_s: float) -> None:
    """SIGTERM the server and wait while it answers the requests it has accepted (its exit timeout).

    Triton then unloads its models, and waits for one whose stub died to unload: it never does, so once the
    log says every model is stopped, only a short grace is left before the caller kills what remains.
    """
    log = Path(deployment.log_file)
    offset = log.stat().st_size if log.exists() else 0
    os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s + UNLOAD_GRACE_S
    unloading_since = None
    while process.poll() is None and time.monotonic() < deadline:
        if unloading_since is None and _log_since(log, offset).find(UNLOADING_MARKER) >= 0:
            unloading_since = time.monotonic()
        if unloading_since is not None and time.monotonic() - unloading_since > UNLOAD_GRACE_S:
            return
        time.sleep(0.1)


def _log_since(log: Path, offset: int) -> str:
    try:
        with log.open("rb") as handle:
            handle.seek(offset)
            return handle.read().decode(errors="replace")
    except OSError:
        return ""
