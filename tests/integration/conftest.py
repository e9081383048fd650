"""Real tritonserver fixtures: one packaged repository and one deployment shared by the module's tests.

Deployments here and in the modules stop with no drain (`drain_timeout_s=0`): a stop waits for nothing, not even a
client's kept-alive connection (Triton would wait out its whole exit timeout for one). The default drain stays where
it is the subject: test_drain.py, test_rollout.py's abort and blue-green tests (a canary drains as its primary does)
and the test of a server stopping by itself when its supervisor dies.
Every server started here is stopped by its fixture, and the session ends by checking that no
process or shared-memory region this session's MFN_HOME owns is left behind.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import mfn
from mfn.local import deployments
from tests.conftest import EXAMPLES, HANDLERS
from tests.processes import kill_owned

MLP = f"{EXAMPLES / 'mlp' / 'handler.py'}:MLP"
TEXT_STATS = f"{EXAMPLES / 'text_stats' / 'handler.py'}:text_stats"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test in this folder starts real servers: mark it, so `-m "not integration"` leaves them out."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind(mfn_home: Path) -> Iterator[None]:
    """Fail the run if a server, stub, worker, Prometheus or shared-memory region the tests started outlives it."""
    yield
    deployments.undeploy_all()
    leaked_processes, leaked_regions = kill_owned(mfn_home)
    assert not leaked_processes, f"server processes left running: {sorted(leaked_processes)}"
    assert not leaked_regions, f"shared-memory regions left behind: {sorted(leaked_regions)}"


@pytest.fixture(scope="session")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("repository")
    mfn.package(MLP, repo)
    mfn.package(TEXT_STATS, repo)
    mfn.package(f"{HANDLERS / 'faulty.py'}:Faulty", repo)
    mfn.package(f"{HANDLERS / 'poisonable.py'}:Poisonable", repo)
    mfn.package(f"{HANDLERS / 'sequences.py'}:Sequences", repo, warmup={"batch_size": 2, "count": 2})
    for version in (1, 2):
        mfn.package(f"{HANDLERS / 'versioned.py'}:Versioned", repo, version=version)
    return repo


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("store")
    batching = {"max_batch_size": 8, "max_queue_delay_us": 5000, "preferred_batch_sizes": [4, 8]}
    mfn.package(MLP, store, server="torchserve", batching=batching)
    mfn.package(TEXT_STATS, store, server="torchserve")
    mfn.package(f"{HANDLERS / 'faulty.py'}:Faulty", store, server="torchserve")
    mfn.package(f"{HANDLERS / 'poisonable.py'}:Poisonable", store, server="torchserve")
    for version in (1, 2):
        mfn.package(f"{HANDLERS / 'versioned.py'}:Versioned", store, server="torchserve", version=version)
    return store


@pytest.fixture(scope="session")
def torchserve_deployment(store: Path) -> Iterator[deployments.Deployment]:
    deployed = deployments.deploy(store, name="suite-ts", drain_timeout_s=0)  # drain is test_drain.py's subject
    yield deployed
    deployments.undeploy("suite-ts")


@pytest.fixture(scope="session")
def deployment(repository: Path) -> Iterator[deployments.Deployment]:
    deployed = deployments.deploy(repository, name="suite", drain_timeout_s=0)
    yield deployed
    deployments.undeploy("suite")
