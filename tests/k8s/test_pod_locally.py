"""The rendered pod, run on this machine: the server container's own command, args, env and ports
(paths and ports mapped, the image aside), checked through the rendered probes, the metrics port and
the preStop hook. The probes run for real: they pass while the models answer and fail once a model's
Triton stub or TorchServe worker has been killed."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
import yaml

import mfn
from mfn.local.launching import remove_shm_regions
from mfn.local.state import home_tag
from mfn.kubernetes.helm import chart_path, values_for
from mfn.servers.torchserve import launch as torchserve
from mfn.servers.triton import launch as triton
from mfn.servers.http import request
from mfn.servers.process import descendants, free_ports, process_start_time, start_detached, stop_process_group
from tests.conftest import EXAMPLES, metric_samples, wait_for

pytestmark = pytest.mark.integration


def rendered(path: Path, tmp_path: Path, *sets: str) -> tuple[dict, dict[str, str], dict[str, str]]:
    """The rendered Deployment's pod spec, the rendered ConfigMap's files and the generated Secret's keys."""
    import base64
    import json

    values_file = tmp_path / "values.json"
    values_file.write_text(json.dumps(values_for(path, "pod", model_uri="https://models.example.com/m.tar.gz", pvc=None)))
    assignments = [arg for assignment in sets for arg in ("--set", assignment)]
    output = subprocess.run(
        ["helm", "template", "pod", str(chart_path()), "--values", str(values_file), *assignments],
        capture_output=True, text=True, check=True,
    ).stdout
    documents = [doc for doc in yaml.safe_load_all(output) if doc]
    deployment = next(doc for doc in documents if doc["kind"] == "Deployment")
    config_map = next(doc for doc in documents if doc["kind"] == "ConfigMap")
    secrets = [doc for doc in documents if doc["kind"] == "Secret"]
    keys = {name: base64.b64decode(value).decode() for doc in secrets for name, value in doc["data"].items()}
    return deployment["spec"]["template"]["spec"], config_map["data"], keys


class LocalPod:
    """Maps the container's paths and ports onto this machine."""

    def __init__(self, container: dict, models: Path, tmp_path: Path, secret: dict[str, str] | None = None) -> None:
        self.container = container
        self.secret = secret or {}
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

    def environment(self, base: dict[str, str], env_dir: Path | None = None) -> dict[str, str]:
        """The container's environment; its /env venv is `env_dir`, by default this machine's venv."""
        env = dict(base)
        for item in self.container["env"]:
            if item["name"] == "PATH":
                env_bin = str(env_dir / "bin") if env_dir else str(Path(sys.executable).parent)
                env["PATH"] = item["value"].replace("/env/bin", env_bin) + os.pathsep + base["PATH"]
            elif "valueFrom" in item:
                env[item["name"]] = self.secret[item["valueFrom"]["secretKeyRef"]["key"]]
            else:
                env[item["name"]] = self.map(item["value"])
        return env

    def command(self, parts: list[str], env: dict[str, str] | None = None) -> list[str]:
        """A rendered command line with this machine's paths and ports; `python3` is this interpreter.
        $(NAME) is expanded from `env`, as the kubelet does for a container's command and args."""
        expand = (lambda part: re.sub(r"\$\((\w+)\)", lambda match: (env or {})[match.group(1)], part))  # noqa: E731
        return [sys.executable if part == "python3" else expand(self.map(part)) for part in parts]


    @property
    def working_dir(self) -> str:
        return self.map(self.container["workingDir"])


def run_probe(pod: LocalPod, env: dict[str, str], name: str) -> subprocess.CompletedProcess:
    """The rendered exec probe, run as the kubelet runs it: in the container's working directory, time-limited."""
    probe = pod.container[name]
    command = pod.command(probe["exec"]["command"])
    return subprocess.run(command, env=env, cwd=pod.working_dir, capture_output=True, text=True, timeout=probe["timeoutSeconds"])


def wait_probe(pod: LocalPod, env: dict[str, str], name: str, timeout_s: float = 90.0) -> subprocess.CompletedProcess:
    """The probe's first passing run, or its last run when none passed within `timeout_s` (its output says why)."""
    runs = []
    with suppress(AssertionError):
        wait_for(lambda: runs.append(run_probe(pod, env, name)) or runs[-1].returncode == 0, timeout_s, name, every_s=0.5)
    return runs[-1]


def wait_ok(url: str, timeout_s: float) -> int:
    return wait_for(lambda: request("GET", url, timeout_s=2.0)[0] == 200 and 200, timeout_s, f"{url} to answer 200",
                    every_s=0.2)


def kill_below(pid: int, matches: Callable[[list[str]], bool]) -> list[int]:
    killed = [child for child, command in descendants(pid).items() if command and matches(command)]
    for child in killed:
        os.kill(child, signal.SIGKILL)
    return killed


@contextmanager
def crash_looping(pid: int, matches: Callable[[list[str]], bool]) -> Iterator[list[int]]:
    """Kill every matching process below `pid` as soon as it appears, until the block ends: a worker that
    keeps dying, so the model cannot answer however quickly the server restarts it."""
    killed: list[int] = []
    done = threading.Event()

    def kill_until_done() -> None:
        while not done.is_set():
            killed.extend(kill_below(pid, matches))
            done.wait(0.05)

    thread = threading.Thread(target=kill_until_done, daemon=True)
    thread.start()
    try:
        yield killed
    finally:
        done.set()
        thread.join()


@contextmanager
def running_pod(pod: LocalPod, command: list[str], env: dict[str, str], tmp_path: Path) -> Iterator[subprocess.Popen]:
    """The server container's process, serving and passing all its probes; stopped afterwards, whatever happened."""
    process = start_detached(command, env, tmp_path / "pod.log", Path(pod.working_dir))
    try:
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            result = wait_probe(pod, env, probe)
            assert result.returncode == 0, f"{probe} failed: {result.stdout}\n{(tmp_path / 'pod.log').read_text()[-3000:]}"
        metrics_url = f"http://127.0.0.1:{pod.local_ports['metrics']}/metrics"
        # Triton may open its metrics port just after the models answer: poll, don't race it.
        assert wait_ok(metrics_url, timeout_s=15.0) == 200, f"{metrics_url} never answered"
        code, text = request("GET", metrics_url, timeout_s=5.0)
        assert code == 200, text
        assert metric_samples(text), "the metrics port served no Prometheus text"
        yield process
    finally:
        stop_process_group(process.pid, process_start_time(process.pid), grace_s=15.0)


def test_the_triton_pod_serves_and_its_probe_fails_once_a_stub_is_dead(tmp_path):
    models = tmp_path / "models"
    mfn.package(f"{EXAMPLES / 'text_stats' / 'handler.py'}:text_stats", models)
    # A handler that imports a module and reads a file beside it: the pod serves what its directory shipped.
    mfn.package(f"{EXAMPLES.parent / 'tests' / 'projects' / 'labeler' / 'labeler.py'}:Labeler", models)
    # A short drain: with its stub dead, Triton waits out the whole exit timeout when it stops.
    pod_spec, _, secret = rendered(models, tmp_path, "drainTimeoutSeconds=3")
    container = pod_spec["containers"][0]
    pod = LocalPod(container, models, tmp_path, secret)
    install = triton.find_triton()
    backend = triton.prepare_backend_directory(install, tmp_path / "backends")
    # Image aside: the official image finds tritonserver on PATH and has its own backends and caches.
    env = pod.environment(triton.server_environment(install))
    command = [str(install.binary), *pod.command(container["args"], env)]
    command += [f"--backend-directory={backend}", f"--cache-directory={install.caches}"]
    assert command[1:3] == [f"--model-repository={models}", "--http-address=127.0.0.1"]
    # Shared-memory regions named with this test home's tag, so the suite's clean-up finds any left behind.
    command = [part.replace("shm-region-prefix-name=mfn_", f"shm-region-prefix-name=mfn_{home_tag()}_pod_") for part in command]
    with running_pod(pod, command, env, tmp_path) as process:
        # The probes passed with the Secret's inference key; without it, or with it for the admin APIs, no.
        base = f"http://127.0.0.1:{pod.local_ports['http']}/v2"
        body = b'{"inputs": [{"name": "text", "shape": [1, 1], "datatype": "BYTES", "data": ["a b"]}]}'
        assert request("POST", f"{base}/models/text_stats/infer", 5.0, body)[0] == 403
        inference = {"Authorization": f"Bearer {secret['inference']}"}
        assert request("POST", f"{base}/models/text_stats/infer", 5.0, body, inference)[0] == 200
        labeled = b'{"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [1.0]}]}'
        status, text = request("POST", f"{base}/models/labeler/infer", 5.0, labeled, inference)
        assert status == 200 and "102" in text and '"dog"' in text, text
        assert request("POST", f"{base}/repository/index", 5.0, b"{}", inference)[0] == 403
        admin = {"Authorization": f"Bearer {secret['admin']}"}
        assert request("POST", f"{base}/repository/index", 5.0, b"{}", admin)[0] == 200
        assert kill_below(process.pid, lambda command: Path(command[0]).name == triton.STUB_NAME)
        result = run_probe(pod, env, "readinessProbe")
        assert result.returncode == 1 and "mfn probe: text_stats:" in result.stdout, result.stdout
        # Triton does not bring the stub back: liveness, more tolerant, is what restarts such a pod.
        assert run_probe(pod, env, "livenessProbe").returncode == 1
    # The killed stub's region outlives the server, as it would a pod's restart of its container.
    remove_shm_regions(f"mfn_{home_tag()}_pod_")


def test_the_torchserve_pod_serves_fails_its_probe_while_workers_die_and_drains(tmp_path):
    models = tmp_path / "models"
    mfn.package(f"{EXAMPLES / 'text_stats' / 'handler.py'}:text_stats", models, server="torchserve")
    # No endpoint delay here: no Service routes to this server.
    pod_spec, files, _ = rendered(models, tmp_path, "preStopDelaySeconds=0")
    container = pod_spec["containers"][0]
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
    command = pod.command(container["command"])
    env = pod.environment(torchserve.server_environment(torchserve.find_java_home(), tmp_path))
    with running_pod(pod, command, env, tmp_path) as process:
        # The probes passed with the key TorchServe wrote into its working directory; without it, no.
        assert (Path(pod.working_dir) / "key_file.json").is_file()
        url = f"http://127.0.0.1:{pod.local_ports['http']}/predictions/text_stats"
        status, text = request("POST", url, 5.0, b'{"text": ["a b"]}', {"Content-Type": "application/json"})
        # TorchServe 0.12 answers a missing key with 400 InvalidKeyException.
        assert status in (400, 401) and "Token Authorization failed" in text, (status, text)
        with crash_looping(process.pid, lambda command: any("model_service_worker" in part for part in command)) as killed:
            result = run_probe(pod, env, "readinessProbe")
        assert killed and result.returncode == 1 and "mfn probe: text_stats:" in result.stdout, result.stdout
        # Once workers stop dying, TorchServe's restart (after its back-off) answers again.
        assert wait_probe(pod, env, "readinessProbe", timeout_s=60).returncode == 0, "no new worker ever answered"
        # The preStop hook drains and then stops the server: the container's process ends without a signal.
        started = time.monotonic()
        hook = subprocess.run(
            pod.command(container["lifecycle"]["preStop"]["exec"]["command"]), env=env, cwd=pod.working_dir,
            capture_output=True, text=True, timeout=60,
        )
        assert "mfn drain: every accepted request answered after" in hook.stdout, hook.stdout + hook.stderr
        process.wait(timeout=30)
        assert time.monotonic() - started < pod_spec["terminationGracePeriodSeconds"]



# A pip that tries any index fails at once: the port is closed, and no local wheels or configured indexes apply.
NO_INDEX = {"PIP_NO_INDEX": "1", "PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_EXTRA_INDEX_URL": "",
            "PIP_FIND_LINKS": "", "PIP_CONFIG_FILE": os.devnull}


def test_a_bundled_triton_pod_starts_with_no_index_and_no_mfn_in_the_image(tmp_path):
    """`mfn package --bundle-env`: the rendered build-env initContainer, run with a Python that has no mfn (the
    "image"), unpacks the package's environment with no pip; the server then answers through the probes."""
    models = tmp_path / "models"
    mfn.package(f"{EXAMPLES / 'text_stats' / 'handler.py'}:text_stats", models, bundle_env=True)
    pod_spec, files, secret = rendered(models, tmp_path, "drainTimeoutSeconds=3")
    (init,) = [container for container in pod_spec["initContainers"] if container["name"] == "build-env"]
    assert "--mode=bundle" in init["args"] and not [arg for arg in init["args"] if "pip" in arg]
    image_python = Path(sys._base_executable)
    checked = subprocess.run([str(image_python), "-c", "import mfn"], capture_output=True, text=True, cwd=tmp_path)
    assert checked.returncode != 0, "the stand-in image's Python must not have mfn already"
    env_dir, scripts = tmp_path / "env", tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "build_env.py").write_text(files["build_env.py"])
    container = pod_spec["containers"][0]
    pod = LocalPod(container, models, tmp_path, secret)
    pod.paths.update({"/env": str(env_dir), "/scripts": str(scripts)})
    build = subprocess.run(
        [str(image_python), *pod.command(init["command"][1:] + init["args"])],
        env={**os.environ, **NO_INDEX}, capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    install = triton.find_triton()
    backend = triton.prepare_backend_directory(install, tmp_path / "backends")
    base = triton.server_environment(install, base={key: value for key, value in os.environ.items() if key != "VIRTUAL_ENV"})
    base["PATH"] = os.pathsep.join(part for part in base["PATH"].split(os.pathsep) if part != str(Path(sys.executable).parent))
    env = pod.environment({**base, **NO_INDEX}, env_dir=env_dir)
    where = subprocess.run([str(env_dir / "bin" / "python3"), "-c", "import mfn; print(mfn.__file__)"], env=env,
                           capture_output=True, text=True, cwd=tmp_path)
    assert where.returncode == 0 and where.stdout.startswith(str(env_dir)), where.stdout + where.stderr
    command = [str(install.binary), *pod.command(container["args"], env)]
    command += [f"--backend-directory={backend}", f"--cache-directory={install.caches}"]
    command = [part.replace("shm-region-prefix-name=mfn_", f"shm-region-prefix-name=mfn_{home_tag()}_pod_") for part in command]
    with running_pod(pod, command, env, tmp_path):
        base_url = f"http://127.0.0.1:{pod.local_ports['http']}/v2/models/text_stats/infer"
        body = b'{"inputs": [{"name": "text", "shape": [1, 1], "datatype": "BYTES", "data": ["a b c"]}]}'
        status, text = request("POST", base_url, 5.0, body, {"Authorization": f"Bearer {secret['inference']}"})
        assert status == 200 and '"n_words"' in text, text
    remove_shm_regions(f"mfn_{home_tag()}_pod_")


@pytest.mark.parametrize("target", ["triton", "torchserve"])
def test_the_verify_initcontainer_passes_fetched_packages_and_refuses_a_changed_file(tmp_path, target):
    """The rendered verify-models initContainer, run with a Python that has no mfn: the chart's copy of
    mfn/manifest.py checks the packages against the manifest digests mfn recorded."""
    models = tmp_path / "models"
    mfn.package(f"{EXAMPLES / 'text_stats' / 'handler.py'}:text_stats", models, server=target)
    pod_spec, files, _ = rendered(models, tmp_path)
    (init,) = [container for container in pod_spec["initContainers"] if container["name"] == "verify-models"]
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "manifest.py").write_text(files["manifest.py"])
    pod = LocalPod(pod_spec["containers"][0], models, tmp_path)
    pod.paths["/scripts"] = str(scripts)
    command = [sys._base_executable, *pod.command(init["command"][1:] + init["args"])]

    def verify() -> subprocess.CompletedProcess:
        return subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=tmp_path)

    result = verify()
    assert result.returncode == 0 and "1 model package(s) match" in result.stdout, result.stdout + result.stderr
    if target == "triton":
        changed = models / "text_stats" / "1" / "mfn.json"
        changed.write_text(changed.read_text().replace('"version": 1', '"version": 1 '))
        expected = "text_stats/1/mfn.json changed after packaging"
    else:
        import zipfile

        archive = models / "text_stats.mar"
        with zipfile.ZipFile(archive) as source:
            members = [(item, source.read(item)) for item in source.infolist()]
        with zipfile.ZipFile(archive, "w") as target:
            for item, data in members:
                target.writestr(item, data + b"\n# changed\n" if item.filename == "model-config.yaml" else data)
        expected = "text_stats.mar/model-config.yaml changed after packaging"
    result = verify()
    assert result.returncode == 1 and expected in result.stderr, result.stdout + result.stderr
