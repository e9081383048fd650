"""Fixtures shared by all test layers: an isolated MFN_HOME and the repository's paths."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
HANDLERS = Path(__file__).resolve().parent / "handlers"
GOLDEN = Path(__file__).resolve().parent / "golden"


# `make test` hands work to parallel workers in collection order (`--dist loadgroup --no-loadscope-reorder`), so the
# order below lets the workers finish together: first the units of tests that share a module's deployment (one unit
# per module, or per server where it deploys once for each), largest first; then the tests that start servers of
# their own, each a unit, longest modules first; last the tests that start no server, small units that fill the tail.
LONGEST_SHARED = (
    "integration/test_idle.py", "integration/test_operations.py", "integration/test_model_formats.py",
    "integration/test_malformed.py", "integration/test_cache.py", "integration/test_monitoring.py",
)
# Modules whose tests each start their own servers (their module fixtures only package), longest first.
SPREAD_MODULES = ("integration/test_rollout.py", "integration/test_supervision.py", "integration/test_versions.py",
                  "k8s/test_pod_locally.py", "integration/test_drain.py", "integration/test_tune.py",
                  "integration/test_deploy.py")
STARTING_SERVERS = ("integration/", "k8s/")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the xdist_group marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Order the tests as said above, and keep the tests that share a module's deployment on one worker."""
    here = Path(__file__).parent

    def module(item: pytest.Item) -> str:
        return item.path.relative_to(here).as_posix() if here in item.path.parents else item.nodeid

    def rank(item: pytest.Item) -> tuple[int, int]:
        name = module(item)
        if name in LONGEST_SHARED:
            return 0, LONGEST_SHARED.index(name)
        if name in SPREAD_MODULES:
            return 2, SPREAD_MODULES.index(name)
        return (1, 0) if name.startswith(STARTING_SERVERS) else (3, 0)

    items.sort(key=rank)
    for item in items:
        if module(item) not in SPREAD_MODULES:
            item.add_marker(pytest.mark.xdist_group(group_name(module(item), _module_params(item))))


def group_name(module: str, module_params: list[object]) -> str:
    """The pytest-xdist group of a module's tests that share its deployments: no brackets, since xdist reads the
    group of a node id only after the id's last "]" (a parametrized test's)."""
    return ":".join([module, *map(str, module_params)])


def _module_params(item: pytest.Item) -> list[object]:
    """The values this test gives to parametrized module-scoped fixtures: tests that differ in them share nothing."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    definitions = item._fixtureinfo.name2fixturedefs if hasattr(item, "_fixtureinfo") else {}
    return [params[name] for name in sorted(params)
            if name in definitions and definitions[name][-1].scope == "module"]


@pytest.fixture(scope="session", autouse=True)
def mfn_home() -> Iterator[Path]:
    """Keep deployment records of the suite away from the user's own ~/.mfn; one home per test process (each
    pytest-xdist worker has its own).

    The path is short on purpose: TorchServe's worker sockets live under it, and a Unix socket's path has at most
    107 bytes (pytest's own temporary directories, a worker's included, leave too few).
    """
    home = Path(tempfile.mkdtemp(prefix="mfn-home-")).resolve()
    previous = os.environ.get("MFN_HOME")
    reaper_env = {key: value for key, value in os.environ.items() if key != "MFN_HOME"}
    os.environ["MFN_HOME"] = str(home)
    # Servers are detached on purpose (they outlive `mfn deploy`); the reaper ties those the tests start to
    # this process's life, so a crashed or killed test run leaves nothing behind.
    reaper = subprocess.Popen(
        [sys.executable, "-m", "tests.processes", str(home)], stdin=subprocess.PIPE, cwd=ROOT, env=reaper_env,
        start_new_session=True,
    )
    yield home
    reaper.stdin.close()  # type: ignore[union-attr]
    reaper.wait(timeout=30)
    shutil.rmtree(home, ignore_errors=True)
    if previous is None:
        del os.environ["MFN_HOME"]
    else:
        os.environ["MFN_HOME"] = previous


@pytest.fixture
def empty_mfn_home(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An MFN_HOME of the test's own, with no deployment in it: the session's home may hold the session-scoped
    deployments of tests that ran before on the same worker."""
    home = Path(tempfile.mkdtemp(prefix="mfn-home-")).resolve()
    monkeypatch.setenv("MFN_HOME", str(home))
    yield home
    shutil.rmtree(home, ignore_errors=True)


def assert_matches_golden(actual: str, golden: Path) -> None:
    """Compare with a golden file; MFN_UPDATE_GOLDEN=1 rewrites it instead (review the diff)."""
    if os.environ.get("MFN_UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(actual)
    assert golden.exists(), f"{golden} is missing: run with MFN_UPDATE_GOLDEN=1 to create it"
    assert actual == golden.read_text(), f"{golden.name} differs; if the change is intended, rerun with MFN_UPDATE_GOLDEN=1"


def metric_samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of every sample in a Prometheus text page, read as mfn reads it (names as exposed)."""
    from mfn.prometheus_text import samples

    return [(sample.name, sample.labels, sample.value) for sample in samples(text)]


def scrape(url: str) -> list[tuple[str, dict[str, str], float]]:
    """metric_samples of the page at a metrics URL."""
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as response:
        return metric_samples(response.read().decode())


def wait_for(condition, timeout_s: float, what: str, every_s: float = 0.1):
    """`condition()`'s first truthy value, asked every `every_s` until `timeout_s`; AssertionError naming `what`."""
    from mfn.polling import poll

    value = poll(condition, timeout_s, every_s)
    if not value:
        raise AssertionError(f"timed out waiting for {what} ({timeout_s} s)")
    return value


def settled(read, every_s: float, what: str, tries: int = 20):
    """`read()` once two reads `every_s` apart agree (nothing still on its way, e.g. a metrics flush); AssertionError
    naming `what` if it keeps changing for about `tries` intervals."""
    import time

    last = [read()]

    def unchanged() -> tuple | None:
        time.sleep(every_s)
        current = read()
        same, last[0] = current == last[0], current
        return (current,) if same else None

    return wait_for(unchanged, every_s * tries, f"{what} to stop changing", every_s=0)[0]
