"""The README's curl examples, run as written against real servers, with the key `mfn token` prints."""

from __future__ import annotations

import os
import re
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
