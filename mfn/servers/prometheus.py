"""A local Prometheus (Debian's `prometheus` package) scraping mfn deployments."""

from __future__ import annotations

import shutil
from pathlib import Path

from mfn.errors import DeployError

INSTALL_HINT = "install Prometheus, e.g. `apt-get install prometheus` (Debian/Ubuntu), so `prometheus` is on PATH"


def find_prometheus() -> str:
    binary = shutil.which("prometheus")
    if binary is None:
        raise DeployError(f"prometheus was not found: {INSTALL_HINT}")
    return binary


def server_command(binary: str, config_file: Path, storage: Path, port: int) -> list[str]:
    """Prometheus on loopback; the lifecycle API lets a config change be reloaded without a restart."""
    return [
        binary,
        f"--config.file={config_file}",
        f"--storage.tsdb.path={storage}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--web.enable-lifecycle",
        "--log.level=warn",
    ]
