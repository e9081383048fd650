"""Deploy packaged models to a tritonserver process on this machine, and stop it again."""

from __future__ import annotations

import re
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from mfn.deploy import state
from mfn.deploy.state import Deployment
from mfn.errors import DeployError, MfnError
from mfn.servers import triton
from mfn.servers.http import error_message, request
from mfn.servers.process import free_ports, process_start_time, start_detached, stop_process_group

SHM_DIR = Path("/dev/shm")
START_TIMEOUT_S = 60.0
LOAD_TIMEOUT_S = 300.0
PORT_ATTEMPTS = 3
LOG_TAIL_LINES = 30

Progress = Callable[[str], None]


def discover_models(path: Path) -> tuple[Path, list[str]]:
    """Return (repository, model names) for a repository directory or a single model directory."""
    path = Path(path).resolve()
    if (path / "config.pbtxt").is_file():
        return path.parent, [path.name]
    if not path.is_dir():
        raise MfnError(f"{path} is not a directory; give a model repository written by `mfn package`")
    models = sorted(child.name for child in path.iterdir() if (child / "config.pbtxt").is_file())
    if not models:
        raise MfnError(f"{path} holds no models (no <name>/config.pbtxt); run `mfn package ... --output {path}` first")
    return path, models


def deploy(
    path: Path | str,
    name: str | None = None,
    models: list[str] | None = None,
    progress: Progress = lambda message: None,
) -> Deployment:
    """Start tritonserver on 127.0.0.1 for the models in `path`, load each, and record the deployment.

    Raises:
        DeployError: the server did not start or a model failed to load (with the server's reason);
            nothing is left running then.
    """
    repository, found = discover_models(Path(path))
    chosen = models or found
    unknown = sorted(set(chosen) - set(found))
    if unknown:
        raise MfnError(f"models {unknown} are not in {repository} (it has {', '.join(found)})")
    name = name or _deployment_name(repository)
    _claim_name(name)
    install = triton.find_triton()
    workdir = state.deployments_dir() / name
    shutil.rmtree(workdir, ignore_errors=True)
    backend_dir = triton.prepare_backend_directory(install, workdir / "backends")
    deployment = _start_server(name, install, repository, backend_dir, workdir, progress)
    try:
        for model in chosen:
            _load_model(deployment, model, progress)
            deployment.models.append(model)
            state.save(deployment)
    except BaseException:
        undeploy(name)
        raise
    return deployment


def undeploy(name: str) -> Deployment:
    """Stop a deployment's server, remove its shared-memory regions, work directory and record."""
    deployment = state.get(name)
    stop_process_group(deployment.pid, deployment.start_time, grace_s=triton.EXIT_TIMEOUT_S + 5)
    remove_shm_regions(deployment.shm_prefix)
    shutil.rmtree(deployment.workdir, ignore_errors=True)
    state.remove(name)
    return deployment


def undeploy_all() -> list[Deployment]:
    return [undeploy(deployment.name) for deployment in state.all_deployments()]


def status() -> list[Deployment]:
    return state.all_deployments()


def remove_shm_regions(prefix: str) -> None:
    if prefix:
        for region in SHM_DIR.glob(f"{prefix}*"):
            region.unlink(missing_ok=True)


def log_tail(deployment: Deployment, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = Path(deployment.log_file).read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def wait_until_stopped(deployment: Deployment) -> None:
    """Block while the server runs (for --foreground)."""
    while deployment.running:
        time.sleep(0.5)


def _deployment_name(repository: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", repository.name) or "mfn"


def _claim_name(name: str) -> None:
    existing = state.load(name)
    if existing is None:
        return
    if existing.running:
        raise DeployError(f"deployment {name!r} is already running; `mfn undeploy {name}` first, or pass --name")
    undeploy(name)


def _start_server(
    name: str, install: triton.TritonInstall, repository: Path, backend_dir: Path, workdir: Path, progress: Progress
) -> Deployment:
    log_file = workdir / "tritonserver.log"
    for attempt in range(PORT_ATTEMPTS):
        ports = triton.Ports(*free_ports(3))
        shm_prefix = f"mfn_{secrets.token_hex(4)}_"
        args = triton.server_args(
            repository=str(repository),
            ports=ports,
            models=[],
            backend_directory=str(backend_dir),
            cache_directory=str(install.caches),
            shm_prefix=shm_prefix,
        )
        progress(f"starting tritonserver for {name} (http {ports.http}, grpc {ports.grpc}, metrics {ports.metrics})")
        process = start_detached([str(install.binary), *args], triton.server_environment(install), log_file, workdir)
        deployment = Deployment(
            name=name,
            server="triton",
            pid=process.pid,
            start_time=process_start_time(process.pid),
            host="127.0.0.1",
            ports={"http": ports.http, "grpc": ports.grpc, "metrics": ports.metrics},
            models=[],
            repository=str(repository),
            log_file=str(log_file),
            workdir=str(workdir),
            shm_prefix=shm_prefix,
        )
        state.save(deployment)
        if _wait_live(deployment, process):
            return deployment
        tail = log_tail(deployment)
        undeploy(name)
        workdir.mkdir(parents=True, exist_ok=True)
        backend_dir = triton.prepare_backend_directory(install, workdir / "backends")
        if "address already in use" not in tail.lower() or attempt == PORT_ATTEMPTS - 1:
            raise DeployError(f"tritonserver did not start:\n{tail}")
    raise AssertionError("unreachable")


def _wait_live(deployment: Deployment, process) -> bool:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        code, _ = request("GET", f"{deployment.http_url}/v2/health/live", timeout_s=1.0)
        if code == 200:
            return True
        time.sleep(0.05)
    return False


def _load_model(deployment: Deployment, model: str, progress: Progress) -> None:
    progress(f"loading {model} ...")
    started = time.monotonic()
    code, body = request("POST", f"{deployment.http_url}/v2/repository/models/{model}/load", timeout_s=LOAD_TIMEOUT_S)
    if code != 200:
        reason = error_message(body) if code else f"{body}\n{log_tail(deployment)}"
        raise DeployError(f"model {model!r} failed to load: {reason}")
    code, body = request("GET", f"{deployment.http_url}/v2/models/{model}/ready", timeout_s=5.0)
    if code != 200:
        raise DeployError(f"model {model!r} loaded but is not ready: {error_message(body)}")
    progress(f"{model} ready ({time.monotonic() - started:.1f} s)")
