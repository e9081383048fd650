"""The rendered pod, run on this machine: the server container's own command, args, env and ports
(paths and ports mapped, the image aside), checked through the rendered probes and metrics port."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

import mfn
from mfn.kubernetes.helm import chart_path, values_for
from mfn.servers import torchserve, triton
from mfn.servers.http import request
from mfn.servers.process import free_ports, process_start_time, start_detached, stop_process_group
from tests.conftest import EXAMPLES

pytestmark = pytest.mark.integration


def rendered(path: Path, tmp_path: Path) -> tuple[dict, dict[str, str]]:
    """The server container of the rendered Deployment, and the rendered ConfigMap's files."""
    import json

    values_file = tmp_path / "values.json"
    values_file.write_text(json.dumps(values_for(path, "pod", model_uri="https://models.example.com/m.tar.gz", pvc=None)))
    output = subprocess.run(
        ["helm", "template", "pod", str(chart_path()), "--values", str(values_file)], capture_output=True, text=True, check=True
    ).stdout
    documents = [doc for doc in yaml.safe_load_all(output) if doc]
    deployment = next(doc for doc in documents if doc["kind"] == "Deployment")
    config_map = next(doc for doc in documents if doc["kind"] == "ConfigMap")
    return deployment["spec"]["template"]["spec"]["containers"][0], config_map["data"]


class LocalPod:
    """Maps the container's paths and ports onto this machine."""

    def __init__(self, container: dict, models: Path, tmp_path: Path) -> None:
        self.container = container
        self.ports = {port["name"]: port["containerPort"] for port in container["ports"]}
        self.local_ports = dict(zip(self.ports, free_ports(len(self.ports))))
        self.paths = {"/models": str(models), "/config": str(tmp_path / "config"), "/tmp": str(tmp_path / "pod-tmp")}
        (tmp_path / "pod-tmp").mkdir()

    def map(self, text: str) -> str:
        paths = "|".join(re.escape(path) for path in self.paths)
        text = re.sub(rf"(?<![\w/])({paths})(?=/|\b|$)", lambda match: self.paths[match.group(1)], text)
        by_number = {str(port): str(self.local_ports[name]) for name, port in self.ports.items()}
        numbers = "|".join(by_number)
        text = re.sub(rf"(?<=[=:])({numbers})(?!\d)", lambda match: by_number[match.group(1)], text)
        return text.replace("0.0.0.0", "127.0.0.1")

    def environment(self, base: dict[str, str]) -> dict[str, str]:
        env = dict(base)
        for item in self.container["env"]:
            if item["name"] == "PATH":
                # The pod's /env venv is this machine's venv.
                env["PATH"] = item["value"].replace("/env/bin", str(Path(sys.executable).parent)) + os.pathsep + base["PATH"]
            else:
                env[item["name"]] = self.map(item["value"])
        return env

    def probe_url(self, probe: dict) -> str:
        get = probe["httpGet"]
        return f"http://127.0.0.1:{self.local_ports[get['port']]}{get['path']}"


def wait_ok(url: str, timeout_s: float = 90.0) -> int:
    deadline = time.monotonic() + timeout_s
    code = 0
    while time.monotonic() < deadline:
        code, _ = request("GET", url, timeout_s=2.0)
        if code == 200:
            return code
        time.sleep(0.2)
    return code


def run_pod(pod: LocalPod, command: list[str], env: dict[str, str], tmp_path: Path) -> None:
    process = start_detached(command, env, tmp_path / "pod.log", tmp_path)
    try:
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            url = pod.probe_url(pod.container[probe])
            assert wait_ok(url) == 200, f"{probe} {url} failed:\n{(tmp_path / 'pod.log').read_text()[-3000:]}"
        metrics_url = f"http://127.0.0.1:{pod.local_ports['metrics']}/metrics"
        # Triton opens its metrics port just after the HTTP endpoint the probes use: poll, don't race it.
        assert wait_ok(metrics_url, timeout_s=15.0) == 200, f"{metrics_url} never answered"
        code, text = request("GET", metrics_url, timeout_s=5.0)
        assert code == 200, text
        assert list(text_string_to_metric_families(text)), "the metrics port served no Prometheus text"
    finally:
        stop_process_group(process.pid, process_start_time(process.pid), grace_s=15.0)


def test_the_triton_pod_command_serves_and_passes_its_probes(tmp_path):
    models = tmp_path / "models"
    mfn.package(f"{EXAMPLES / 'text_stats' / 'handler.py'}:text_stats", models)
    container, _ = rendered(models, tmp_path)
    pod = LocalPod(container, models, tmp_path)
    install = triton.find_triton()
    backend = triton.prepare_backend_directory(install, tmp_path / "backends")
    # Image aside: the official image finds tritonserver on PATH and has its own backends and caches.
    command = [str(install.binary), *(pod.map(arg) for arg in container["args"])]
    command += [f"--backend-directory={backend}", f"--cache-directory={install.caches}"]
    assert command[1:3] == [f"--model-repository={models}", "--http-address=127.0.0.1"]
    run_pod(pod, command, pod.environment(triton.server_environment(install)), tmp_path)


def test_the_torchserve_pod_command_serves_and_passes_its_probes(tmp_path):
    models = tmp_path / "models"
    mfn.package(f"{EXAMPLES / 'text_stats' / 'handler.py'}:text_stats", models, target="torchserve")
    container, files = rendered(models, tmp_path)
    pod = LocalPod(container, models, tmp_path)
    config = tmp_path / "config"
    config.mkdir()
    for name in ("config.properties", "log4j2.xml"):
        (config / name).write_text(pod.map(files[name]))
    # The pod's private management ports are not in the container's port list: give them free ports too.
    management, grpc_management = free_ports(2)
    properties = (config / "config.properties").read_text()
    properties = properties.replace(":8081", f":{management}").replace("=7071", f"={grpc_management}")
    (config / "config.properties").write_text(properties)
    command = [pod.map(part) for part in container["command"]]
    command[0] = sys.executable  # python3 in the image
    env = pod.environment(torchserve.server_environment(torchserve.find_java_home(), tmp_path))
    run_pod(pod, command, env, tmp_path)
