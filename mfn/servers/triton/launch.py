"""The tritonserver that ships inside the nvidia-pytriton wheel: where it is, how to launch it.

`server_args` is the single description of the server command line; local deploys run it as is.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from mfn.errors import DeployError

PYTHON_BACKEND_FILES = ("libtriton_python.so", "triton_python_backend_utils.py")
STUB_NAME = "triton_python_backend_stub"
EXIT_TIMEOUT_S = 5


@dataclass(frozen=True)
class Ports:
    """The three ports a Triton server listens on."""

    http: int
    grpc: int
    metrics: int


@dataclass(frozen=True)
class TritonInstall:
    """Paths inside an installed nvidia-pytriton wheel."""

    root: Path

    @property
    def binary(self) -> Path:
        return self.root / "bin" / "tritonserver"

    @property
    def python_backend(self) -> Path:
        return self.root / "backends" / "python"

    @property
    def caches(self) -> Path:
        return self.root / "caches"

    @property
    def libs(self) -> Path:
        return self.root.parent.parent / "nvidia_pytriton.libs"

    def stub(self) -> Path:
        """The Python backend stub built for the running interpreter's version."""
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        stub = self.root / "python_backend_stubs" / version / STUB_NAME
        if not stub.is_file():
            raise DeployError(f"nvidia-pytriton has no Python backend stub for Python {version} ({stub} is missing)")
        return stub


def find_triton() -> TritonInstall:
    """Locate tritonserver without importing pytriton (which is slow and logs at import)."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise DeployError("tritonserver is not installed: pip install 'mfn-serve[triton]' (it ships in nvidia-pytriton)")
    install = TritonInstall(Path(next(iter(spec.submodule_search_locations))) / "tritonserver")
    if not install.binary.is_file():
        raise DeployError(f"nvidia-pytriton is installed but {install.binary} is missing; reinstall it")
    return install


def prepare_backend_directory(install: TritonInstall, directory: Path) -> Path:
    """Lay out `directory/python/` the way tritonserver expects, with the stub for this Python.

    Links rather than copies: a copied stub no longer finds the libraries bundled beside the wheel.
    """
    python_dir = directory / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    sources = [install.python_backend / name for name in PYTHON_BACKEND_FILES] + [install.stub()]
    for source in sources:
        link = python_dir / source.name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(source)
    return directory


# Behind the admin key: everything that changes or reveals the server beyond inference. The model-repository
# API loads code (a model.py given in a load request's files), so it is never open.
ADMIN_APIS = "model-repository,model-config,shared-memory,statistics,trace,logging"
INFERENCE_APIS = "inference,metadata"
AUTH_HEADER = "authorization"


def restricted_args(admin_key: str | None, inference_key: str | None) -> list[str]:
    """--http-restricted-api / --grpc-restricted-protocol arguments: each API group answers only requests that
    carry `authorization: Bearer <its key>`. Health stays open for probes, metrics (another port) for Prometheus.

    tritonserver 2.51 wants `<apis>:<header>=<value>`, a colon after the API list (its --help shows a comma,
    which it refuses at startup).
    """
    args = []
    for apis, key in ((ADMIN_APIS, admin_key), (INFERENCE_APIS, inference_key)):
        if key:
            args += [f"--http-restricted-api={apis}:{AUTH_HEADER}=Bearer {key}",
                     f"--grpc-restricted-protocol={apis}:{AUTH_HEADER}=Bearer {key}"]
    return args


def server_args(  # noqa: PLR0913
    repository: str,
    ports: Ports,
    models: list[str],
    shm_prefix: str,
    backend_directory: str | None = None,
    cache_directory: str | None = None,
    address: str = "127.0.0.1",
    gpus: bool = False,
    exit_timeout_s: int = EXIT_TIMEOUT_S,
    response_cache_bytes: int = 0,
) -> list[str]:
    """The tritonserver arguments mfn uses, locally and in the Helm chart, explicit model control included.

    `backend_directory`/`cache_directory` are for the pip-installed server; an official image has its own.
    Without `gpus`, GPU metrics and the pinned-memory pool (which would probe for CUDA) are switched off.
    `exit_timeout_s` is how long a stopping server lets requests in flight finish. The API keys are not here:
    they go through mfn.servers.secret_args locally and the chart's Secret in a pod (see restricted_args).
    `response_cache_bytes` sizes Triton's
    local response cache for the models whose config enables it (mfn.model_repository.render.response_cache_bytes).
    """
    args = [f"--model-repository={repository}"]
    if backend_directory:
        args.append(f"--backend-directory={backend_directory}")
    if cache_directory:
        args.append(f"--cache-directory={cache_directory}")
    args += [
        f"--http-address={address}",
        f"--http-port={ports.http}",
        f"--grpc-address={address}",
        f"--grpc-port={ports.grpc}",
        f"--metrics-address={address}",
        f"--metrics-port={ports.metrics}",
        "--model-control-mode=explicit",
        # mfn writes complete configs; auto-complete would only slow loading and hide mistakes.
        "--disable-auto-complete-config",
    ]
    if not gpus:
        args += ["--allow-gpu-metrics=false", "--pinned-memory-pool-byte-size=0"]
    args += [
        f"--exit-timeout-secs={exit_timeout_s}",
        # A per-deployment prefix lets mfn find and remove the shared-memory regions a crash leaves behind.
        f"--backend-config=python,shm-region-prefix-name={shm_prefix}",
        "--log-verbose=0",
    ]
    if response_cache_bytes:
        args.append(f"--cache-config=local,size={response_cache_bytes}")
    args += [f"--load-model={model}" for model in models]
    return args


def server_environment(install: TritonInstall, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for tritonserver and the Python stubs it spawns.

    The stub ignores PYTHONPATH and finds packages through the first python3 on PATH, so the running
    interpreter's bin directory goes first; its libpython goes first on LD_LIBRARY_PATH so the stub does not
    pick up a system libpython of another patch level.
    """
    env = dict(os.environ if base is None else base)
    # Keep the model repository exactly as packaged: no __pycache__ written into it by the server.
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    library_dirs = [sysconfig.get_config_var("LIBDIR") or "", env.get("LD_LIBRARY_PATH", ""), str(install.libs)]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(part for part in library_dirs if part)
    return env
