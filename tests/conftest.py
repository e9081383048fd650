"""Fixtures shared by all test layers: an isolated MFN_HOME and the repository's paths."""

from __future__ import annotations

import os
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
    home = tmp_path_factory.mktemp("mfn-home")
    previous = os.environ.get("MFN_HOME")
    os.environ["MFN_HOME"] = str(home)
    yield home
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
