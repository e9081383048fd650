"""Deployments keep to themselves: private files and shared memory, model repositories left as packaged."""

from __future__ import annotations

import stat
from pathlib import Path

import numpy as np
import pytest

import mfn
from mfn.deploy.launching import SHM_DIR

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


def test_serving_writes_no_handler_bytecode_into_the_model_repository(deployment, repository):
    with mfn.Client(deployment.name) as client:
        client.infer("text_stats", {"text": [["a b"]]})
    # Triton's stub compiles the adapter (model.py) in an interpreter that ignores PYTHONDONTWRITEBYTECODE,
    # before mfn's code runs; everything the adapter imports from the repository is left uncompiled.
    written = [path for path in repository.rglob("*.pyc") if path.name.split(".")[0] != "model"]
    assert not written
