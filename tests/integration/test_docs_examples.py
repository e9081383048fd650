"""Every runnable code block of README.md and docs/, run as written against real servers.

Which blocks run, and how, is said by a marker before each block (tests/docs_blocks.py describes the kinds):
shell blocks for a deployment run once per server against the session's shared deployments (one script per page
and server), whole shell sessions and Python scripts run alone in a temporary directory holding `examples/`, and
handler modules are packaged, which runs their `predict` on a sample batch. tests/unit/test_docs_site.py checks
that every block carries a marker.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import mfn
from mfn.local import deployments
from tests.docs_blocks import ROOT, Block, runnable

pytestmark = pytest.mark.integration
SERVERS = {"triton": "deployment", "torchserve": "torchserve_deployment"}


def deployment_scripts() -> dict[tuple[str, str], str]:
    """One script per (page, server): the page's `deployment` blocks and that server's own, in page order."""
    scripts: dict[tuple[str, str], list[Block]] = {}
    for server in SERVERS:
        for block in sorted(runnable("deployment") + runnable(f"deployment:{server}"), key=lambda b: (b.page, b.line)):
            scripts.setdefault((block.page, server), []).append(block)
    return {key: "".join(block.code for block in found) for key, found in scripts.items()}


def environment(**extra: str) -> dict[str, str]:
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    return {**os.environ, "PATH": path, **extra}


def run(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A directory as the repository's root looks to a reader: the examples beside the commands."""
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    return tmp_path


@pytest.fixture
def own_deployments_undeployed():
    """Undeploy whatever a standalone block deployed and left running, even when it failed half-way."""
    before = {deployment.name for deployment in deployments.status()}
    yield
    for deployment in deployments.status():
        if deployment.name not in before:
            deployments.undeploy(deployment.name)


@pytest.mark.parametrize(("page", "server"), sorted(deployment_scripts()),
                         ids=[f"{page}-{server}" for page, server in sorted(deployment_scripts())])
def test_deployment_blocks_run_against_the_shared_deployment(page, server, request, tmp_path):
    deployment = request.getfixturevalue(SERVERS[server])
    script = deployment_scripts()[page, server]
    result = run(["bash", "-euo", "pipefail", "-c", script], tmp_path, environment(NAME=deployment.name))
    assert result.returncode == 0, f"{page} on {server}:\n{result.stderr[-3000:]}{result.stdout[-3000:]}"
    assert result.stdout.strip(), f"{page} on {server} printed nothing"


@pytest.mark.parametrize("block", runnable("shell"), ids=lambda block: block.where)
def test_shell_sessions_run_as_written(block, workdir, own_deployments_undeployed):
    result = run(["bash", "-euo", "pipefail", "-c", block.code], workdir, environment())
    assert result.returncode == 0, f"{block.where}:\n{result.stderr[-3000:]}{result.stdout[-3000:]}"


@pytest.mark.parametrize("block", runnable("python"), ids=lambda block: block.where)
def test_python_scripts_run_as_written(block, workdir, own_deployments_undeployed):
    # Printing the names it made proves the block ran to its end; `mfn.deploy` must still be the function after
    # the block imported the client (it once became a package there).
    script = block.code + "print(sorted(globals()))\nassert callable(mfn.deploy), mfn.deploy\n"
    result = run([sys.executable, "-c", script], workdir, environment())
    assert result.returncode == 0, f"{block.where}:\n{result.stderr[-3000:]}"
    assert "'__builtins__'" in result.stdout


def test_handler_blocks_package(tmp_path):
    """Every handler block packages: mfn imports it, checks its declarations and runs predict on a sample batch."""
    blocks = runnable("handler")
    assert blocks, "no handler block found"
    for index, block in enumerate(blocks):
        project = tmp_path / f"handler_{index}"
        project.mkdir()
        # A module name of its own per block: two blocks must not share one imported module.
        module = project / f"docs_handler_{index}.py"
        module.write_text("import numpy as np\n\nimport mfn\n\n" + block.code)
        (name,) = [line.split()[1].split("(")[0] for line in block.code.splitlines()
                   if line.startswith(("class ", "def "))]
        try:
            mfn.package(f"{module}:{name}", tmp_path / f"models_{index}")
        except Exception as error:  # noqa: BLE001 - the block's location is what the reader needs
            pytest.fail(f"{block.where} does not package: {error}")
