"""Deployments keep to themselves: private files and shared memory, model repositories left as packaged."""

from __future__ import annotations

import stat
from pathlib import Path

import numpy as np
import pytest

import mfn
from mfn.local import deployments
from mfn.local.launching import SHM_DIR

pytestmark = pytest.mark.integration


def private(path: Path) -> bool:
    return stat.S_IMODE(path.stat().st_mode) & 0o077 == 0


@pytest.mark.parametrize("fixture", ["deployment", "torchserve_deployment"])
def test_work_dirs_logs_and_shared_memory_are_private(fixture, request):
    deployment = request.getfixturevalue(fixture)
    with mfn.Client(deployment.name) as client:
        client.infer("mlp", {"features": np.ones((1, 4), dtype=np.float32)})
    assert private(Path(deployment.workdir)) and private(Path(deployment.log_file))
    regions = list(SHM_DIR.glob(f"{deployment.shm_prefix}*")) if deployment.shm_prefix else []
    assert bool(regions) == (deployment.server == "triton")  # Triton's stubs move tensors through them
    for region in regions:
        assert private(region), f"{region} is {oct(stat.S_IMODE(region.stat().st_mode))}"


def test_everything_mfn_writes_is_its_users_alone(repository, torchserve_deployment, mfn_home):
    # A deployment behind the proxy too: its configuration and nginx's logs are mfn's files as well.
    fronted = deployments.deploy(repository, name="private-proxy", models=["text_stats"], proxy=True, drain_timeout_s=0)
    try:
        written = [path for path in mfn_home.rglob("*") if not path.is_symlink() and (path.is_file() or path.is_dir())]
        names = {path.name for path in written}
        assert {"error.log", "nginx.conf", "supervisor.log", "plan.json", "config.properties", "keys.json"} <= names
        shared = [f"{path} {oct(stat.S_IMODE(path.stat().st_mode))}" for path in written if not private(path)]
        assert not shared, "\n".join(shared)
    finally:
        deployments.undeploy(fronted.name)
