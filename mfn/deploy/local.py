"""Deploy packaged models to a server process on this machine (tritonserver or TorchServe), and stop it."""

from __future__ import annotations

import json
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mfn.deploy import state
from mfn.deploy.state import Deployment
from mfn.errors import DeployError, MfnError
from mfn.servers.http import error_message, request
from mfn.servers.process import free_ports, process_start_time, start_detached, stop_process_group

SHM_DIR = Path("/dev/shm")
START_TIMEOUT_S = 90.0
LOAD_TIMEOUT_S = 300.0
STOP_GRACE_S = 15.0
PORT_ATTEMPTS = 3
LOG_TAIL_LINES = 30

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Store:
    """What a deploy path holds: which server it is for and the models in it."""

    server: str
    root: Path
    models: dict[str, list[Path]]


def discover(path: Path) -> Store:
    """Recognise a Triton model repository (or one model directory) or a TorchServe model store."""
    from mfn.archiver.reading import archive_info, is_archive, store_archives

    path = Path(path).resolve()
    if (path / "config.pbtxt").is_file():
        return Store("triton", path.parent, {path.name: [path]})
    if is_archive(path):
        return Store("torchserve", path.parent, {archive_info(path).name: [path]})
    if not path.is_dir():
        raise MfnError(f"{path} is not a directory; give a model repository or model store written by `mfn package`")
    triton_models = {child.name: [child] for child in sorted(path.iterdir()) if (child / "config.pbtxt").is_file()}
    archives = store_archives(path)
    if triton_models and archives:
        raise MfnError(f"{path} mixes Triton models and TorchServe archives; keep one kind per directory")
    if triton_models:
        return Store("triton", path, triton_models)
    if archives:
        models: dict[str, list[Path]] = {}
        for archive in archives:
            models.setdefault(archive_info(archive).name, []).append(archive)
        return Store("torchserve", path, models)
    raise MfnError(
        f"{path} holds no models (no <name>/config.pbtxt, no .mar archives); run `mfn package ... --output {path}` first"
    )


def deploy(
    path: Path | str,
    name: str | None = None,
    models: list[str] | None = None,
    auth: bool = True,
    monitor: bool = False,
    progress: Progress = lambda message: None,
) -> Deployment:
    """Start a server on 127.0.0.1 for the models in `path`, load each, and record the deployment.

    Args:
        path: A Triton model repository / model directory, or a TorchServe model store / archive.
        name: Deployment name; defaults to the directory's name.
        models: Load only these models.
        auth: TorchServe token authorization (mfn's client reads the key file); ignored for Triton.
        monitor: Also start a Prometheus on 127.0.0.1 that scrapes the server; `undeploy` stops it.
        progress: Called with one line per step.

    Raises:
        DeployError: the server did not start or a model failed to load (with the server's reason);
            nothing is left running then.
    """
    store = discover(Path(path))
    chosen = models or list(store.models)
    unknown = sorted(set(chosen) - set(store.models))
    if unknown:
        raise MfnError(f"models {unknown} are not in {store.root} (it has {', '.join(store.models)})")
    name = name or re.sub(r"[^A-Za-z0-9_.-]", "-", store.root.name) or "mfn"
    _claim_name(name)
    workdir = state.deployments_dir() / name
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    if store.server == "triton":
        from mfn.deploy import triton_local as server
    else:
        from mfn.deploy import torchserve_local as server  # type: ignore[no-redef]
    deployment = server.start(name, store, workdir, auth, progress)
    try:
        for model in chosen:
            progress(f"loading {model} ...")
            started = time.monotonic()
            server.load_model(deployment, store, model)
            deployment.models.append(model)
            state.save(deployment)
            progress(f"{model} ready ({time.monotonic() - started:.1f} s)")
        if monitor:
            from mfn.monitoring.local import start_prometheus

            progress(f"Prometheus at {start_prometheus(deployment)}")
    except BaseException:
        undeploy(name)
        raise
    return deployment


def launch(
    name: str,
    server: str,
    workdir: Path,
    port_names: tuple[str, ...],
    make_command: Callable[[dict[str, int]], tuple[list[str], dict[str, str]]],
    live_path: str,
    progress: Progress,
    repository: Path,
    shm_prefix: str = "",
    live_token: Callable[[], str | None] = lambda: None,
) -> Deployment:
    """Start a server process on free ports, record it, and wait until `live_path` answers 200.

    `live_token` gives the bearer token the health endpoint needs, if any, once the server has written it.

    Retries with new ports when another process took one between choosing and binding.
    """
    log_file = workdir / f"{server}.log"
    for attempt in range(PORT_ATTEMPTS):
        ports = dict(zip(port_names, free_ports(len(port_names))))
        command, env = make_command(ports)
        progress(f"starting {server} for {name} ({', '.join(f'{k} {v}' for k, v in ports.items())})")
        process = start_detached(command, env, log_file, workdir)
        deployment = Deployment(
            name=name,
            server=server,
            pid=process.pid,
            start_time=process_start_time(process.pid),
            host="127.0.0.1",
            ports=ports,
            models=[],
            repository=str(repository),
            log_file=str(log_file),
            workdir=str(workdir),
            shm_prefix=shm_prefix,
        )
        state.save(deployment)
        if _wait_live(deployment, process, live_path, live_token):
            return deployment
        tail = log_tail(deployment)
        stop_process_group(deployment.pid, deployment.start_time, grace_s=STOP_GRACE_S)
        if "address already in use" not in tail.lower() or attempt == PORT_ATTEMPTS - 1:
            _forget(deployment)
            raise DeployError(f"{server} did not start:\n{tail}")
    raise AssertionError("unreachable")


def undeploy(name: str) -> Deployment:
    """Stop a deployment's server, remove its shared-memory regions, work directory and record."""
    from mfn.monitoring.local import stop_prometheus

    deployment = state.get(name)
    stop_prometheus(deployment)
    stop_process_group(deployment.pid, deployment.start_time, grace_s=STOP_GRACE_S)
    _forget(deployment)
    return deployment


def set_default_version(model: str, version: int, deployment_name: str | None = None) -> Deployment:
    """Make `version` of `model` the default of its local deployment (TorchServe's default-version switch).

    Triton has no such switch: it serves the newest loaded version to requests without one.
    """
    deployment = state.get(deployment_name) if deployment_name else state.find_serving(model)
    if deployment.server != "torchserve":
        raise MfnError(
            f"{deployment.name} runs Triton, which answers version-less requests with the newest loaded version; "
            "choose the served versions with --version-policy when packaging, or pass --version when invoking"
        )
    from mfn.deploy.torchserve_local import set_default_version as switch

    switch(deployment, model, version)
    return deployment


def undeploy_all() -> list[Deployment]:
    return [undeploy(deployment.name) for deployment in state.all_deployments()]


def status() -> list[Deployment]:
    return state.all_deployments()


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


def http_json(method: str, url: str, timeout_s: float, token: str | None = None) -> tuple[int, dict | str]:
    """Call a server's REST API; the body comes back parsed when it is JSON."""
    code, body = request(method, url, timeout_s=timeout_s, headers={"Authorization": f"Bearer {token}"} if token else None)
    try:
        return code, json.loads(body)
    except ValueError:
        return code, body


def describe_failure(code: int, body: dict | str, deployment: Deployment) -> str:
    """The server's reason for a failed call, with the log's last lines when the call got no answer."""
    if code == 0:
        return f"{body}\n{log_tail(deployment)}"
    if isinstance(body, dict):
        return str(body.get("error") or body.get("message") or body)
    return error_message(body)


def new_shm_prefix() -> str:
    """A fresh prefix for one server's shared-memory regions, tagged with this MFN_HOME (see state.home_tag)."""
    return f"mfn_{state.home_tag()}_{secrets.token_hex(4)}_"


def _forget(deployment: Deployment) -> None:
    if deployment.shm_prefix:
        for region in SHM_DIR.glob(f"{deployment.shm_prefix}*"):
            region.unlink(missing_ok=True)
    shutil.rmtree(deployment.workdir, ignore_errors=True)
    state.remove(deployment.name)


def _claim_name(name: str) -> None:
    existing = state.load(name)
    if existing is None:
        return
    if existing.running:
        raise DeployError(f"deployment {name!r} is already running; `mfn undeploy {name}` first, or pass --name")
    undeploy(name)


def _wait_live(
    deployment: Deployment, process: subprocess.Popen, live_path: str, live_token: Callable[[], str | None]
) -> bool:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        code, _ = http_json("GET", f"{deployment.http_url}{live_path}", timeout_s=1.0, token=live_token())
        if code == 200:
            return True
        time.sleep(0.05)
    return False
