"""Local deploys on TorchServe from PyPI, token authorization on by default."""

from __future__ import annotations

from collections.abc import Sequence
import json
import logging
import os
import signal
import subprocess
from typing import TYPE_CHECKING
import urllib.parse
from pathlib import Path

from mfn.archiver.reading import archive_info
from mfn.archiver.render import TOKEN_PREFIX
from mfn.local.launching import describe_failure, http_json, launch, load_timeout_s
from mfn.local.state import Deployment, read_key
from mfn.store import Store
from mfn.local.versions import ServedVersions, plan_versions
from mfn.errors import DeployError
from mfn.servers.torchserve import class_data, launch as torchserve
from mfn.servers.drain import wait_until_answered
from mfn.files import write_text
from mfn.servers.process import group_on_parent_death

if TYPE_CHECKING:
    from mfn.local.supervision import Plan

STOP_WAIT_S = 10.0
PORT_NAMES = ("http", "management", "metrics", "grpc", "grpc_management")

USES_SHARED_MEMORY = False


def start(
    plan: Plan, store: Store, workdir: Path, preload: Sequence[str] = (),
) -> tuple[Deployment, subprocess.Popen]:
    """Start TorchServe; models are registered one by one through the management API afterwards.

    A restart passes `preload`: TorchServe then registers those models' archives before it opens its ports,
    so clients that reconnect are queued for a worker instead of answered 'model not found'.

    Token authorization is on whatever the options' `auth` says: TorchServe's one switch also opens the management
    APIs, which register and run code. A deployment whose inference is open (`auth` off) is served through mfn's proxy,
    which speaks to the server with its key (mfn.local.deployments.deploy).
    """
    name, options = plan.name, plan.options
    archives = [archive.name for model in preload for archive in served_archives(store, model)]
    torchserve.check_installed()
    java_home = torchserve.find_java_home()
    torchserve.check_socket_room(workdir / "tmp")
    for directory in ("tmp", "logs", class_data.RUN_DIR):
        (workdir / directory).mkdir(exist_ok=True)
    (workdir / "log4j2.xml").write_text(torchserve.LOG_CONFIG)
    run_dir = workdir / class_data.RUN_DIR  # empty at the JVM's start (see class_data) but for the key file it writes
    key_file = run_dir / torchserve.KEY_FILE
    key_file.unlink(missing_ok=True)
    # Where mfn's clients read the keys: the previous start's stay there until this one's replace them, so a client
    # that asks meanwhile (a wake-up, a restart) gets a key it can send, refused at worst, and reads the file again.
    published_keys = workdir / torchserve.KEY_FILE
    jvm_options = class_data.vm_options(java_home)

    def command(ports: dict[str, int]) -> tuple[list[str], dict[str, str]]:
        config = torchserve.config_properties(
            torchserve.Ports(**_rename(ports)), str(store.root), auth=True, max_request_bytes=options.max_request_bytes,
            load_models=",".join(archives) or None, jvm_heap_mb=options.jvm_heap_mb, address=options.host, management_host="127.0.0.1",
            jvm_options=jvm_options,
        )
        (workdir / "config.properties").write_text(config)
        command = torchserve.server_command(str(workdir / "config.properties"), str(workdir / "log4j2.xml"), str(store.root))
        return group_on_parent_death(command), torchserve.server_environment(java_home, workdir)

    def ping_token() -> str | None:
        # With authorization on, even /ping wants the inference key, which exists once the server has started.
        try:
            return json.loads(key_file.read_text())["inference"]["key"]
        except (OSError, KeyError, ValueError):
            return None

    deployment, process = launch(
        name, "torchserve", workdir, PORT_NAMES, command, "/ping", store.root, live_token=ping_token, ports=options.ports,
        parent_death_signal=signal.SIGHUP, host=options.host, cwd=run_dir,
    )
    write_text(published_keys, key_file.read_text())
    deployment.key_file = str(published_keys)
    if not any(option.startswith("-XX:SharedArchiveFile") for option in jvm_options):
        class_data.build_in_background(java_home)
    return deployment, process


def served_archives(store: Store, model: str) -> list[Path]:
    """The archives of `model` its version policy serves (a restart preloads them; the supervisor then applies the
    operator's choices with `serve_versions`)."""
    planned = plan_versions(store.packaged_versions(model), store.version_policy(model))
    return [archive for archive in store.models[model] if archive_info(archive).version in planned.versions]


def serve_versions(deployment: Deployment, store: Store, model: str, served: ServedVersions, fresh: bool = False) -> None:
    """Serve exactly `served.versions` of `model` with `served.default` answering requests without a version (mfn.local.versions
    decides which), and wait for their workers. Versions served before keep answering; `fresh` (`mfn reload`)
    unregisters every version first and registers the archives as they are now on disk: TorchServe cannot register
    a version twice, so requests in between get 404 (Triton has no gap)."""
    archives = {archive_info(archive).version: archive for archive in store.models[model]}
    # The management API answers slowly while other models register (a deploy loads them side by side): give its
    # lists as long as a registration.
    wait_s = load_timeout_s(deployment)
    registered = set(served_versions(deployment, model, wait_s)) if model in _registered(deployment, wait_s) else set()
    if fresh:
        _unregister(deployment, model, registered)
        registered = set()
    for version in sorted(set(served.versions) - registered, reverse=True):  # the first registered is the default
        _register(deployment, archives[version])
    if len(served.versions) > 1 and served.default is not None and default_version(deployment, model, wait_s) != served.default:
        _set_default(deployment, model, served.default)
    _unregister(deployment, model, registered - set(served.versions))  # the default is not among them by now


def _register(deployment: Deployment, archive: Path, workers: int | None = None) -> None:
    info = archive_info(archive)
    query = urllib.parse.urlencode({"url": archive.name, "initial_workers": workers or info.workers, "synchronous": "true"})
    token = read_key(deployment, "management")
    code, body = http_json("POST", f"{management_url(deployment)}/models?{query}", load_timeout_s(deployment), token)
    if code != 200:
        reason = describe_failure(code, body, deployment)
        raise DeployError(f"model {info.name!r} v{info.version} failed to load: {reason}\n{_worker_errors(deployment)}")


def _registered(deployment: Deployment, timeout_s: float = 10.0) -> set[str]:
    """The models the server has registered (the list call works for every model name)."""
    code, body = http_json("GET", f"{management_url(deployment)}/models?limit=10000", timeout_s, read_key(deployment, "management"))
    if code != 200 or not isinstance(body, dict):
        raise DeployError(f"cannot list the models of {deployment.name}: {describe_failure(code, body, deployment)}")
    return {entry["modelName"] for entry in body.get("models", [])}


def _descriptions(deployment: Deployment, model: str, timeout_s: float = 10.0) -> list[dict]:
    code, body = http_json("GET", f"{management_url(deployment)}/models/{model}/all", timeout_s, read_key(deployment, "management"))
    if code == 404:
        return []
    if code == 400 and model.startswith(TOKEN_PREFIX):
        raise DeployError(f"TorchServe 0.12 refuses management calls for {model}: it reads /models/{TOKEN_PREFIX}... as its "
                          "own token API; the model serves, but to describe, scale or unload it, package it under "
                          "another name (mfn package --name)")
    if code != 200 or not isinstance(body, list):
        raise DeployError(f"cannot describe {model} in {deployment.name}: {describe_failure(code, body, deployment)}")
    return body


def served_versions(deployment: Deployment, model: str, timeout_s: float = 10.0) -> list[int]:
    """The versions of `model` registered with the server, oldest first."""
    return sorted(int(float(entry["modelVersion"])) for entry in _descriptions(deployment, model, timeout_s))


def default_version(deployment: Deployment, model: str, timeout_s: float = 10.0) -> int | None:
    """The version TorchServe answers requests without a version with."""
    code, body = http_json("GET", f"{management_url(deployment)}/models/{model}", timeout_s, read_key(deployment, "management"))
    if code != 200 or not isinstance(body, list) or not body:
        return None
    return int(float(body[0]["modelVersion"]))


def unload_model(deployment: Deployment, model: str) -> None:
    """Unregister `model`, every version (one version goes through `serve_versions`)."""
    versions = set(served_versions(deployment, model))
    if not versions:
        raise DeployError(f"{model} is not loaded in {deployment.name}")
    _unregister(deployment, model, versions)


def _unregister(deployment: Deployment, model: str, versions: set[int]) -> None:
    """Unregister `versions` of `model`, its default last (TorchServe refuses to remove the default while others
    are registered)."""
    default = default_version(deployment, model) if versions else None
    token = read_key(deployment, "management")
    for version in sorted(versions, key=lambda version: version == default):
        url = f"{management_url(deployment)}/models/{model}/{version}?synchronous=true"
        code, body = http_json("DELETE", url, load_timeout_s(deployment), token)
        if code != 200:
            raise DeployError(f"{model} v{version} could not be unloaded: {describe_failure(code, body, deployment)}")


def scale_model(deployment: Deployment, model: str, count: int, version: int | None = None) -> None:
    """Run `count` workers for each served version of `model` (or only `version`)."""
    token = read_key(deployment, "management")
    for served in served_versions(deployment, model) if version is None else [version]:
        query = urllib.parse.urlencode({"min_worker": count, "max_worker": count, "synchronous": "true"})
        code, body = http_json("PUT", f"{management_url(deployment)}/models/{model}/{served}?{query}", load_timeout_s(deployment), token)
        if code != 200:
            raise DeployError(f"{model} v{served}: scaling to {count} workers failed: {describe_failure(code, body, deployment)}")


def model_details(deployment: Deployment, model: str) -> dict:
    """What `mfn describe` shows of a registered model, from the management API (its newest version)."""
    descriptions = _descriptions(deployment, model)
    if not descriptions:
        raise DeployError(f"model {model!r} is not loaded in {deployment.name}")
    newest = max(descriptions, key=lambda entry: float(entry["modelVersion"]))
    workers = {int(float(entry["modelVersion"])): len(entry.get("workers", [])) for entry in descriptions}
    return {
        "instances": [f"workers:{count} (v{version})" for version, count in sorted(workers.items())],
        "max_batch_size": newest.get("batchSize", 1),
        "max_queue_delay_us": int(newest.get("maxBatchDelay", 0)) * 1000,
    }


def management_url(deployment: Deployment) -> str:
    return f"http://{deployment.host}:{deployment.ports['management']}"


def _set_default(deployment: Deployment, model: str, version: int) -> None:
    token = read_key(deployment, "management")
    code, body = http_json("PUT", f"{management_url(deployment)}/models/{model}/{version}/set-default", 30.0, token)
    if code != 200:
        raise DeployError(f"cannot make {model} v{version} the default: {describe_failure(code, body, deployment)}")


def _rename(ports: dict[str, int]) -> dict[str, int]:
    return {"inference" if key == "http" else key: value for key, value in ports.items()}


def _worker_errors(deployment: Deployment) -> str:
    """The handler's own frames and exception from the log, which the management API does not return; the log's
    last worker lines where no traceback went through the handler (an import of the adapter failed, say)."""
    from mfn.local.launching import log_tail

    text = log_tail(deployment, 400)
    failure = torchserve.handler_failure(text)
    if failure is not None:
        return failure
    lines = [line for line in text.splitlines() if "MODEL_LOG" in line or "Error" in line]
    return "\n".join(lines[-15:])


def reload_model(deployment: Deployment, store: Store, model: str) -> None:
    """TorchServe restarts dead workers itself; re-register only a model the server no longer knows (the versions
    its policy names)."""
    code, _ = http_json("GET", f"{management_url(deployment)}/models/{model}", 10.0, read_key(deployment, "management"))
    if code == 404:
        serve_versions(deployment, store, model, plan_versions(store.packaged_versions(model), store.version_policy(model)))


def worker_processes(deployment: Deployment, server_pid: int) -> dict[int, tuple[str, bool]]:
    """TorchServe watches and restarts its own workers, so there is nothing for mfn to track."""
    return {}


def model_problem(deployment: Deployment, model: str) -> str | None:
    """Why `model` cannot answer now (no worker ready), or None when at least one worker of each version is."""
    try:
        descriptions = _descriptions(deployment, model)
    except DeployError as error:
        if model.startswith(TOKEN_PREFIX) and model in _registered(deployment):
            return None  # TorchServe will not describe it (see _descriptions): being registered is all it tells
        return str(error).splitlines()[0]
    if not descriptions:
        return f"{model} is not registered with the server"
    for version in descriptions:
        workers = version.get("workers", [])
        if not any(worker.get("status") == "READY" for worker in workers):
            states = ", ".join(worker.get("status", "?") for worker in workers) or "no workers"
            return f"v{version.get('modelVersion')}: no worker ready ({states})"
    return None


_LOGGER = logging.getLogger(__name__)


def drain(deployment: Deployment, process: subprocess.Popen, timeout_s: float) -> None:
    """Wait until the server has answered every inference request it accepted (at most `timeout_s`), then SIGTERM it.

    TorchServe 0.12 fails every request in flight when it is told to stop, so the waiting comes first. It goes
    by accounts (mfn.servers.drain.read_accounts), not by a quiet moment, so a predict longer than any before is
    waited for and an idle server is stopped at once; requests that arrive during the drain are served too, and
    only what is unanswered when `timeout_s` runs out is lost.
    """
    unanswered = wait_until_answered(deployment.metrics_url, process.poll, timeout_s)
    if unanswered:
        _LOGGER.warning("%s: %d accepted requests still unanswered after the %g s drain timeout; stopping fails them",
                        deployment.name, unanswered, timeout_s)
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_WAIT_S)
    except subprocess.TimeoutExpired:
        pass
