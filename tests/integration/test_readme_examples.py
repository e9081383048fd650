"""The README's examples, run as written against real servers: the curl blocks with the key `mfn token` prints,
and the Python API block."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
README = Path(__file__).resolve().parents[2] / "README.md"


def readme_curl_blocks() -> tuple[str, dict[str, str]]:
    """The set-up block (the one that calls `mfn token`) and the curl block per server."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), re.S)
    (setup,) = [block for block in blocks if "mfn token" in block]
    per_server = {server: block for block in blocks for server, marker in (("triton", "# Triton\ncurl"),
                                                                           ("torchserve", "# TorchServe\ncurl"))
                  if block.startswith(marker)}
    assert set(per_server) == {"triton", "torchserve"}, "the README lost a curl example"
    return setup, per_server


@pytest.mark.parametrize("server", ["triton", "torchserve"])
def test_the_readme_curl_example_is_answered_with_the_printed_key(server, request, tmp_path):
    deployment = request.getfixturevalue("deployment" if server == "triton" else "torchserve_deployment")
    setup, per_server = readme_curl_blocks()
    env = {**os.environ, "NAME": deployment.name, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    script = setup + per_server[server] + 'test -n "$TOKEN"\n'
    result = subprocess.run(["bash", "-euc", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr + result.stdout
    headers = result.stdout.lower()
    assert " 200" in headers.splitlines()[0] and "inference-header-content-length" in headers
    assert (tmp_path / "answer.bin").stat().st_size > 0


def test_the_readme_python_example_runs_as_written(tmp_path):
    (block,) = [block for block in re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
                if "mfn.Client(" in block and "mfn.deploy(" in block]
    shutil.copytree(README.parent / "examples" / "mlp", tmp_path / "examples" / "mlp")
    # Printing what it got proves the block ran to its end; calling mfn.deploy once more proves the name is still
    # the function after the block imported the client (it once became a package there).
    script = block + "print(outputs)\nassert callable(mfn.deploy), mfn.deploy\n"
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "probs" in result.stdout and "label" in result.stdout
    assert (tmp_path / "models" / "mlp" / "config.pbtxt").exists()
