"""Chart tests run the real helm binary (installed into the venv by `make setup`)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def helm_on_path() -> str:
    """Put the venv's bin directory (where `make setup` installs helm) first on PATH, as mfn looks helm up there."""
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    helm = shutil.which("helm")
    assert helm, "helm is missing: `make setup` installs it (scripts/install_helm.py)"
    return helm
