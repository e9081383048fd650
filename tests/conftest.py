"""Fixtures shared by all test layers: an isolated MFN_HOME and the repository's paths."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
HANDLERS = Path(__file__).resolve().parent / "handlers"
GOLDEN = Path(__file__).resolve().parent / "golden"


@pytest.fixture(scope="session", autouse=True)
def mfn_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Keep deployment records of the suite away from the user's own ~/.mfn."""
    home = tmp_path_factory.mktemp("mfn-home").resolve()
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
    if previous is None:
        del os.environ["MFN_HOME"]
    else:
        os.environ["MFN_HOME"] = previous


def assert_matches_golden(actual: str, golden: Path) -> None:
    """Compare with a golden file; MFN_UPDATE_GOLDEN=1 rewrites it instead (review the diff)."""
    if os.environ.get("MFN_UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(actual)
    assert golden.exists(), f"{golden} is missing: run with MFN_UPDATE_GOLDEN=1 to create it"
    assert actual == golden.read_text(), f"{golden.name} differs; if the change is intended, rerun with MFN_UPDATE_GOLDEN=1"


def wait_for(condition, timeout_s: float, what: str, every_s: float = 0.1):
    """`condition()`'s first truthy value, asked every `every_s` until `timeout_s`; AssertionError naming `what`."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"timed out waiting for {what} ({timeout_s} s)")
