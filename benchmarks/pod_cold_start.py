"""Pod cold start: the chart's rendered containers run on this machine, timed from the first container's start
to the first answer, with the model fetched over HTTPS from a local server and the environment bundled.

What runs, in order, as the kubelet would run the pod (image aside, paths and ports mapped as the chart's
pod test maps them, tests/k8s/test_pod_locally.py):

1. `fetch-model`: the chart's fetch_model.py downloads the packages' tar.gz from a local HTTPS server (a
   self-signed certificate trusted through SSL_CERT_FILE) into /models;
2. `verify-models`: the chart's manifest.py checks every package against the digests mfn recorded;
3. `build-env` (Triton, `requirements.mode=bundle`): the environment packed by `mfn package --bundle-env` is
   unpacked into a venv, by a Python that has no mfn and with every package index unreachable;
4. the server container's command, until a one-row request is answered.

TorchServe's pod runs with `requirements.mode=image` (this machine's environment stands in for an image with
mfn): its worker runs TorchServe's own module, which the stand-in image's bare Python lacks.

Run: `python benchmarks/pod_cold_start.py [--repeat 3]`; results in benchmarks/results/pod_cold_start.json.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import ssl
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the chart's pod test holds the path and port mapping

import mfn  # noqa: E402
from mfn.local.launching import remove_shm_regions  # noqa: E402
from mfn.local.state import home_tag  # noqa: E402
from mfn.servers.torchserve import launch as torchserve  # noqa: E402
from mfn.servers.triton import launch as triton  # noqa: E402
from mfn.servers.http import request  # noqa: E402
from mfn.servers.process import free_ports, process_start_time, start_detached, stop_process_group  # noqa: E402
from tests.k8s.test_pod_locally import NO_INDEX, LocalPod  # noqa: E402

HANDLER = f"{ROOT / 'examples/text_stats/handler.py'}:text_stats"
PHASES = ("fetch_s", "verify_s", "env_s", "server_to_first_answer_s", "total_s")


def https_server(directory: Path, scratch: Path) -> tuple[str, Path, http.server.HTTPServer]:
    """A local HTTPS server for `directory`; its base URL and the certificate to trust."""
    cert, key = scratch / "cert.pem", scratch / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    handler_class = type("Quiet", (http.server.SimpleHTTPRequestHandler,), {"log_message": lambda *args: None})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *args: handler_class(*args, directory=str(directory)))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"https://127.0.0.1:{server.server_address[1]}", cert, server


def rendered(packages: Path, scratch: Path, uri: str, *sets: str) -> tuple[dict, dict[str, str], dict[str, str]]:
    import base64

    import yaml

    from mfn.kubernetes.helm import chart_path, values_for

    values_file = scratch / "values.json"
    values_file.write_text(json.dumps(values_for(packages, "pod", model_uri=uri, pvc=None)))
    assignments = [arg for assignment in sets for arg in ("--set", assignment)]
    output = subprocess.run(["helm", "template", "pod", str(chart_path()), "--values", str(values_file), *assignments],
                            capture_output=True, text=True, check=True).stdout
    documents = [doc for doc in yaml.safe_load_all(output) if doc]
    deployment = next(doc for doc in documents if doc["kind"] == "Deployment")
    files = next(doc for doc in documents if doc["kind"] == "ConfigMap")["data"]
    keys = {name: base64.b64decode(value).decode() for doc in documents if doc["kind"] == "Secret"
            for name, value in doc["data"].items()}
    return deployment["spec"]["template"]["spec"], files, keys


def run_init(pod: LocalPod, init: dict, env: dict[str, str], python: str) -> None:
    command = [python, *pod.command(init["command"][1:] + init.get("args", []))]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise SystemExit(f"{init['name']} failed: {result.stdout}{result.stderr}")


def one_pod(server: str, store: Path, scratch: Path) -> dict[str, float]:
    """One pod start; seconds per phase."""
    served = scratch / "served"
    served.mkdir()
    with tarfile.open(served / "models.tar.gz", "w:gz") as archive:
        for item in sorted(store.iterdir()):
            archive.add(item, arcname=item.name)
    base_url, cert, https = https_server(served, scratch)
    try:
        sets = ["drainTimeoutSeconds=3"] + (["requirements.mode=image"] if server == "torchserve" else [])
        spec, files, secret = rendered(store, scratch, f"{base_url}/models.tar.gz", *sets)
        models, scripts, env_dir, config = scratch / "models", scratch / "scripts", scratch / "env", scratch / "config"
        for directory in (models, scripts, config):
            directory.mkdir()
        container = spec["containers"][0]
        pod = LocalPod(container, models, scratch, secret)
        pod.paths.update({"/env": str(env_dir), "/scripts": str(scripts)})
        for name, text in files.items():
            # fetch_model.py names /models and /tmp itself: its copy gets this machine's paths.
            (scripts / name).write_text(pod.map(text) if name == "fetch_model.py" else text)
        image_python = str(Path(sys._base_executable))  # a Python without mfn stands in for the image's
        init_env = {**os.environ, **NO_INDEX, "SSL_CERT_FILE": str(cert), "HOME": str(scratch)}
        inits = {init["name"]: init for init in spec["initContainers"]}
        timings: dict[str, float] = {}
        started = time.monotonic()
        for name, phase in (("fetch-model", "fetch_s"), ("verify-models", "verify_s"), ("build-env", "env_s")):
            phase_started = time.monotonic()
            if name in inits:
                init_env_for = {**init_env, **{item["name"]: pod.map(item["value"]) for item in inits[name].get("env", []) if "value" in item}}
                run_init(pod, inits[name], init_env_for, image_python)
            timings[phase] = time.monotonic() - phase_started
        server_started = time.monotonic()
        process, url, body, headers = start_server(server, pod, container, files, scratch, env_dir)
        try:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                # Triton's inference key is the Secret's; TorchServe writes its own once it has started.
                key = secret["inference"] if server == "triton" else torchserve_key(pod)
                status, _ = request("POST", url, 5.0, body, {**headers, "Authorization": f"Bearer {key}"})
                if status == 200:
                    break
                time.sleep(0.05)
            else:
                raise SystemExit(f"{server} pod never answered")
            now = time.monotonic()
            timings["server_to_first_answer_s"] = now - server_started
            timings["total_s"] = now - started
        finally:
            stop_process_group(process.pid, process_start_time(process.pid), grace_s=10.0)
            remove_shm_regions(f"mfn_{home_tag()}_pod_")
        return timings
    finally:
        https.shutdown()


def torchserve_key(pod: LocalPod) -> str:
    key_file = Path(pod.working_dir) / "key_file.json"
    return json.loads(key_file.read_text())["inference"]["key"] if key_file.is_file() else ""


def start_server(server: str, pod: LocalPod, container: dict, files: dict[str, str], scratch: Path, env_dir: Path):  # noqa: PLR0913
    if server == "triton":
        install = triton.find_triton()
        backend = triton.prepare_backend_directory(install, scratch / "backends")
        base = triton.server_environment(install, base={key: value for key, value in os.environ.items() if key != "VIRTUAL_ENV"})
        base["PATH"] = os.pathsep.join(part for part in base["PATH"].split(os.pathsep) if part != str(Path(sys.executable).parent))
        env = pod.environment({**base, **NO_INDEX}, env_dir=env_dir)
        command = [str(install.binary), *pod.command(container["args"], env)]
        command += [f"--backend-directory={backend}", f"--cache-directory={install.caches}"]
        command = [part.replace("shm-region-prefix-name=mfn_", f"shm-region-prefix-name=mfn_{home_tag()}_pod_") for part in command]
        url = f"http://127.0.0.1:{pod.local_ports['http']}/v2/models/text_stats/infer"
        body = b'{"inputs": [{"name": "text", "shape": [1, 1], "datatype": "BYTES", "data": ["a b c"]}]}'
        headers: dict[str, str] = {}
    else:
        config = scratch / "config"
        for name in ("config.properties", "log4j2.xml"):
            (config / name).write_text(pod.map(files[name]))
        management, grpc_management = free_ports(2)
        properties = (config / "config.properties").read_text()
        (config / "config.properties").write_text(properties.replace(":8081", f":{management}").replace("=7071", f"={grpc_management}"))
        command = pod.command(container["command"])
        env = pod.environment(torchserve.server_environment(torchserve.find_java_home(), scratch))
        url = f"http://127.0.0.1:{pod.local_ports['http']}/predictions/text_stats"
        body, headers = b'{"text": ["a b c"]}', {"Content-Type": "application/json"}
    process = start_detached(command, env, scratch / "pod.log", Path(pod.working_dir))
    return process, url, body, headers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="Pod starts per server.")
    options = parser.parse_args()
    results = {}
    for server in ("triton", "torchserve"):
        with tempfile.TemporaryDirectory() as packaged:
            store = Path(packaged) / "store"
            mfn.package(HANDLER, store, server=server, bundle_env=server == "triton")
            runs = []
            for _ in range(options.repeat):
                with tempfile.TemporaryDirectory() as scratch:
                    runs.append(one_pod(server, store, Path(scratch)))
        results[server] = {phase: round(statistics.median(run[phase] for run in runs), 3) for phase in PHASES}
        results[server]["runs"] = runs
        print(server, {phase: results[server][phase] for phase in PHASES}, flush=True)
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    (out / "pod_cold_start.json").write_text(json.dumps(results, indent=2))
    print("| server | fetch | verify | environment | server start → first answer | total |")
    print("| --- | --- | --- | --- | --- | --- |")
    for server, row in results.items():
        print(f"| {server} | " + " | ".join(f"{row[phase]:.2f} s" for phase in PHASES) + " |")


if __name__ == "__main__":
    main()
