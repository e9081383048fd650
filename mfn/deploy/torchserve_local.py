"""Local deploys on TorchServe from PyPI, token authorization on by default."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.parse
from pathlib import Path

from mfn.archiver.reading import archive_info
from mfn.deploy.launching import LOAD_TIMEOUT_S, Progress, describe_failure, http_json, launch
from mfn.deploy.state import Deployment, read_key
from mfn.deploy.store import Store
from mfn.errors import DeployError
from mfn.runtime.codec.limits import MAX_BODY_BYTES
from mfn.servers import torchserve
from mfn.servers.drain import metrics_reader, quiet_window_s, wait_until_quiet
from mfn.servers.process import group_on_parent_death

QUIET_S = 2.0  # no request received or answered for this long: nothing is in flight
STOP_WAIT_S = 10.0
PORT_NAMES = ("http", "management", "metrics", "grpc", "grpc_management")

USES_SHARED_MEMORY = False


def start(
    name: str, store: Store, workdir: Path, auth: bool, progress: Progress, shm_prefix: str = "",
    drain_timeout_s: float = 30.0, max_request_bytes: int = MAX_BODY_BYTES,
    ports: dict[str, int] | None = None, preload: list[str] = (), jvm_heap_mb: int | None = None,
) -> tuple[Deployment, subprocess.Popen]:
    """Start TorchServe; models are registered one by one through the management API afterwards.

    A restart passes `preload`: TorchServe then registers those models' archives before it opens its ports,
    so clients that reconnect are queued for a worker instead of answered 'model not found'.
    """
    archives = [archive.name for model in preload for archive in _by_version(store.models[model])]
    torchserve.check_installed()
    java_home = torchserve.find_java_home()
    for directory in ("tmp", "logs"):
        (workdir / directory).mkdir(exist_ok=True)
    (workdir / "log4j2.xml").write_text(torchserve.LOG_CONFIG)

    def command(ports: dict[str, int]) -> tuple[list[str], dict[str, str]]:
        config = torchserve.config_properties(
            torchserve.Ports(**_rename(ports)), str(store.root), auth, max_request_bytes=max_request_bytes,
            load_models=",".join(archives) or None, jvm_heap_mb=jvm_heap_mb,
        )
        (workdir / "config.properties").write_text(config)
        command = torchserve.server_command(str(workdir / "config.properties"), str(workdir / "log4j2.xml"), str(store.root))
        return group_on_parent_death(command), torchserve.server_environment(java_home, workdir)

    key_file = workdir / torchserve.KEY_FILE

    def ping_token() -> str | None:
        # With authorization on, even /ping wants the inference key, which exists once the server has started.
        try:
            return json.loads(key_file.read_text())["inference"]["key"] if auth else None
        except (OSError, KeyError, ValueError):
            return None

    deployment, process = launch(
        name, "torchserve", workdir, PORT_NAMES, command, "/ping", progress, store.root, live_token=ping_token, ports=ports,
        parent_death_signal=signal.SIGHUP,
    )
    if auth:
        deployment.extra["key_file"] = str(key_file)
    return deployment, process


def load_model(deployment: Deployment, store: Store, model: str) -> None:
    """Register every packaged version of `model` (oldest first, so it is the default) and wait for its workers."""
    token = read_key(deployment, "management")
    for archive in _by_version(store.models[model]):
        info = archive_info(archive)
        query = urllib.parse.urlencode({"url": archive.name, "initial_workers": info.workers, "synchronous": "true"})
        code, body = http_json("POST", f"{management_url(deployment)}/models?{query}", LOAD_TIMEOUT_S, token)
        if code != 200:
            reason = describe_failure(code, body, deployment)
            raise DeployError(f"model {model!r} v{info.version} failed to load: {reason}\n{_worker_errors(deployment)}")


def management_url(deployment: Deployment) -> str:
    return f"http://{deployment.host}:{deployment.ports['management']}"


def set_default_version(deployment: Deployment, model: str, version: int) -> None:
    """Make `version` the one served when a request names no version."""
    token = read_key(deployment, "management")
    code, body = http_json("PUT", f"{management_url(deployment)}/models/{model}/{version}/set-default", 30.0, token)
    if code != 200:
        raise DeployError(f"cannot make {model} v{version} the default: {describe_failure(code, body, deployment)}")


def _by_version(archives: list[Path]) -> list[Path]:
    return sorted(archives, key=lambda path: archive_info(path).version)


def _rename(ports: dict[str, int]) -> dict[str, int]:
    return {"inference" if key == "http" else key: value for key, value in ports.items()}


def _worker_errors(deployment: Deployment) -> str:
    """The handler's own error lines from the log, which the management API does not return."""
    from mfn.deploy.launching import log_tail

    lines = [line for line in log_tail(deployment, 400).splitlines() if "MODEL_LOG" in line or "Error" in line]
    return "\n".join(lines[-15:])


def reload_model(deployment: Deployment, store: Store, model: str) -> None:
    """TorchServe restarts dead workers itself; re-register only a model the server no longer knows."""
    code, _ = http_json("GET", f"{management_url(deployment)}/models/{model}", 10.0, read_key(deployment, "management"))
    if code == 404:
        load_model(deployment, store, model)


def worker_processes(deployment: Deployment, server_pid: int) -> dict[int, tuple[str, bool]]:
    """TorchServe watches and restarts its own workers, so there is nothing for mfn to track."""
    return {}


def model_problem(deployment: Deployment, model: str) -> str | None:
    """Why `model` cannot answer now (no worker ready), or None when at least one worker of each version is."""
    code, body = http_json("GET", f"{management_url(deployment)}/models/{model}/all", 10.0, read_key(deployment, "management"))
    if code != 200 or not isinstance(body, list):
        return describe_failure(code, body, deployment) or f"HTTP {code}"
    for version in body:
        workers = version.get("workers", [])
        if not any(worker.get("status") == "READY" for worker in workers):
            states = ", ".join(worker.get("status", "?") for worker in workers) or "no workers"
            return f"v{version.get('modelVersion')}: no worker ready ({states})"
    return None


def drain(deployment: Deployment, process: subprocess.Popen, timeout_s: float) -> None:
    """Wait until the server has been quiet for a moment (at most `timeout_s`), then SIGTERM it.

    TorchServe 0.12 fails every request in flight when it is told to stop, so the waiting comes first. The
    quiet moment is 2 s, plus the slowest predict the model has shown; requests that keep arriving during
    the drain are served too, and only what is in flight when `timeout_s` runs out is lost.
    """
    port = deployment.ports["metrics"]
    wait_until_quiet(metrics_reader(port), timeout_s, quiet_window_s(port, QUIET_S))
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_WAIT_S)
    except subprocess.TimeoutExpired:
        pass
