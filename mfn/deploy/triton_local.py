"""Local deploys on the tritonserver bundled with nvidia-pytriton."""

from __future__ import annotations

import subprocess
from pathlib import Path

from mfn.deploy.local import LOAD_TIMEOUT_S, Progress, Store, describe_failure, http_json, launch
from mfn.deploy.state import Deployment
from mfn.errors import DeployError
from mfn.servers import triton
from mfn.servers.process import children

STUB_SCRIPT = "model.py"


def start(
    name: str, store: Store, workdir: Path, auth: bool, progress: Progress, shm_prefix: str, ports: dict[str, int] | None = None
) -> tuple[Deployment, subprocess.Popen]:
    """Start tritonserver with no models loaded; models are loaded one by one so each failure has its reason."""
    install = triton.find_triton()
    backend_dir = triton.prepare_backend_directory(install, workdir / "backends")

    def command(ports: dict[str, int]) -> tuple[list[str], dict[str, str]]:
        args = triton.server_args(
            repository=str(store.root),
            ports=triton.Ports(**ports),
            models=[],
            backend_directory=str(backend_dir),
            cache_directory=str(install.caches),
            shm_prefix=shm_prefix,
        )
        return [str(install.binary), *args], triton.server_environment(install)

    return launch(
        name, "triton", workdir, ("http", "grpc", "metrics"), command, "/v2/health/live", progress, store.root, shm_prefix,
        ports=ports,
    )


def load_model(deployment: Deployment, store: Store, model: str) -> None:
    code, body = http_json("POST", f"{deployment.http_url}/v2/repository/models/{model}/load", timeout_s=LOAD_TIMEOUT_S)
    if code != 200:
        raise DeployError(f"model {model!r} failed to load: {describe_failure(code, body, deployment)}")
    code, body = http_json("GET", f"{deployment.http_url}/v2/models/{model}/ready", timeout_s=5.0)
    if code != 200:
        raise DeployError(f"model {model!r} loaded but is not ready: {describe_failure(code, body, deployment)}")


def reload_model(deployment: Deployment, store: Store, model: str) -> None:
    """Bring back a model whose stub died: unload, then load.

    A plain `load` of a loaded model is a no-op unless its files changed, so it would leave the dead stub.
    """
    http_json("POST", f"{deployment.http_url}/v2/repository/models/{model}/unload", timeout_s=30.0)
    load_model(deployment, store, model)


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
