"""One interface for the servers mfn runs on this machine, and the registry that picks one by name.

Each server kind has one module implementing `LocalServer` (mfn.servers.triton.admin, mfn.servers.torchserve.admin);
the supervisor and the deploy commands reach them only through `local_server(name)`.
"""

from __future__ import annotations

from collections.abc import Sequence
import importlib
import subprocess
from typing import TYPE_CHECKING, Protocol, cast

from mfn.errors import MfnError
from mfn.kinds import SERVERS

if TYPE_CHECKING:
    from pathlib import Path

    from mfn.local.state import Deployment
    from mfn.local.supervision import Plan
    from mfn.store import Store
    from mfn.local.versions import ServedVersions

SERVER_MODULES = {"triton": "mfn.servers.triton.admin", "torchserve": "mfn.servers.torchserve.admin"}
assert tuple(SERVER_MODULES) == SERVERS, "a LocalServer for every server mfn knows"


class LocalServer(Protocol):
    """What the supervisor needs of one kind of server process."""

    # Whether its model processes exchange tensors through /dev/shm regions (named per deployment, cleaned up).
    USES_SHARED_MEMORY: bool

    def start(
        self, plan: Plan, store: Store, workdir: Path, preload: Sequence[str] = (),
    ) -> tuple[Deployment, subprocess.Popen]:
        """Start the server as `plan` says and wait until it is live on its options' host and ports (all, some or
        none given; free ones for the rest), the same again after a crash, with the `preload` models loaded before
        the ports open. A server reads the options it has a setting for."""

    def serve_versions(self, deployment: Deployment, store: Store, model: str, served: ServedVersions, fresh: bool = False) -> None:
        """Serve exactly these versions of a model (loading it if needed), its default answering requests without a
        version where the server has that switch; `fresh`: new instances from the files on disk (`mfn reload`).
        Raises DeployError with the server's reason."""

    def reload_model(self, deployment: Deployment, store: Store, model: str) -> None:
        """Load a model again after its worker or stub died."""

    def unload_model(self, deployment: Deployment, model: str) -> None:
        """Stop serving the model, every version."""

    def scale_model(self, deployment: Deployment, model: str, count: int, version: int | None = None) -> None:
        """Run `count` instances (Triton, per instance group) or workers (TorchServe, per version)."""

    def served_versions(self, deployment: Deployment, model: str) -> list[int]:
        """The versions the server has ready, oldest first."""

    def default_version(self, deployment: Deployment, model: str) -> int | None:
        """The version the server itself answers requests naming none with."""

    def model_details(self, deployment: Deployment, model: str) -> dict:
        """instances (list of text), max_batch_size, max_queue_delay_us, as the server reports them."""

    def worker_processes(self, deployment: Deployment, server_pid: int) -> dict[int, tuple[str, bool]]:
        """The server's model processes: pid -> (model, alive)."""

    def model_problem(self, deployment: Deployment, model: str) -> str | None:
        """Why a model cannot answer now, or None when it can."""

    def drain(self, deployment: Deployment, process: subprocess.Popen, timeout_s: float) -> None:
        """Let requests in flight finish (at most `timeout_s`) and stop the server."""


def local_server(server: str) -> LocalServer:
    """The implementation for a server kind ("triton" or "torchserve").

    Raises:
        MfnError: naming the kinds there are.
    """
    if server not in SERVER_MODULES:
        raise MfnError(f"unknown server {server!r}: mfn runs {', '.join(SERVER_MODULES)}")
    return cast("LocalServer", importlib.import_module(SERVER_MODULES[server]))
