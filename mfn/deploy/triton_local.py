"""Local deploys on the tritonserver bundled with nvidia-pytriton."""

from __future__ import annotations

from pathlib import Path

from mfn.deploy.local import LOAD_TIMEOUT_S, Progress, Store, describe_failure, http_json, launch, new_shm_prefix
from mfn.deploy.state import Deployment
from mfn.errors import DeployError
from mfn.servers import triton


def start(name: str, store: Store, workdir: Path, auth: bool, progress: Progress) -> Deployment:
    """Start tritonserver with no models loaded; models are loaded one by one so each failure has its reason."""
    install = triton.find_triton()
    backend_dir = triton.prepare_backend_directory(install, workdir / "backends")
    shm_prefix = new_shm_prefix()

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
        name, "triton", workdir, ("http", "grpc", "metrics"), command, "/v2/health/live", progress, store.root, shm_prefix
    )


def load_model(deployment: Deployment, store: Store, model: str) -> None:
    code, body = http_json("POST", f"{deployment.http_url}/v2/repository/models/{model}/load", timeout_s=LOAD_TIMEOUT_S)
    if code != 200:
        raise DeployError(f"model {model!r} failed to load: {describe_failure(code, body, deployment)}")
    code, body = http_json("GET", f"{deployment.http_url}/v2/models/{model}/ready", timeout_s=5.0)
    if code != 200:
        raise DeployError(f"model {model!r} loaded but is not ready: {describe_failure(code, body, deployment)}")
