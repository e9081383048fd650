"""Real tensors on both servers: a ResNet-18-sized TorchScript network, served by mfn and by hand-written code.

Run with `make bench` (after the k6 benchmark) or `python benchmarks/images.py`. The network is built from plain
torch at run time (no downloads): ResNet-18's layers, 11.7 M parameters, input FP32[3,224,224], output
FP32[1000], max_batch_size 8. For each server and protocol it measures, mfn against hand-written code
(Triton: a hand-written model.py called with the stock tritonclient; TorchServe: a hand-written handler
taking raw FP32 bytes, called with keep-alive HTTP or gRPC), alternating the two:

- single-request latency: the median of sequential one-image calls, against in-process `predict` on one image;
- client CPU per image: the calling process's CPU time per sequential call;
- throughput at concurrency 4 (threads in one process), against the in-process ceiling: `predict` on batches
  of 4 in a loop. A ceiling of `predict` on one image at a time is shown too: it is the rate a server that did
  not batch could reach, and the one an outside measurement used (see BENCHMARKS.md on which to read);
- where a served call's time goes, from the server's own counters read around the sequential calls: Triton's
  statistics extension (queue, input, model, output) and TorchServe's frontend counters (queue and total);
  what the server does not count is the client, the transport and, on Triton, HTTP/gRPC parsing.

The latency goal is `predict` × 1.1 + 1 ms; the table says which rows meet it.

It prints a table, writes benchmarks/results/images.json and the "Images" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import platform
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(ROOT))

import mfn  # noqa: E402
from mfn.local import deployments, state  # noqa: E402
from mfn.proxy.nginx_config import GRPC_KEY_HEADER  # noqa: E402
from provenance import stamp  # noqa: E402

IMAGE = (3, 224, 224)
MAX_BATCH = 8
CONCURRENCY = 4
# A hand-written model with the same input and output that runs nothing: the server's own cost per call.
FLOOR = "floor_hand"
SECTION_START, SECTION_END = "<!-- images:start -->", "<!-- images:end -->"


def resnet18():
    """ResNet-18's architecture (He et al. 2015) in plain torch, randomly initialised with a fixed seed."""
    import torch
    from torch import nn

    class BasicBlock(nn.Module):
        def __init__(self, inplanes: int, planes: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = (
                nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
                if stride != 1 or inplanes != planes else nn.Identity()
            )

        def forward(self, x):
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return self.relu(out + self.downsample(x))

    class ResNet18(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
                                      nn.MaxPool2d(3, 2, 1))
            layers, inplanes = [], 64
            for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
                layers += [BasicBlock(inplanes, planes, stride), BasicBlock(planes, planes, 1)]
                inplanes = planes
            self.layers = nn.Sequential(*layers)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(512, 1000)

        def forward(self, x):
            return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))

    torch.manual_seed(0)
    return ResNet18().eval()


def build(work: Path) -> tuple[Path, Path, Path]:
    """The TorchScript file, and a Triton repository and TorchServe store each holding resnet_mfn and resnet_hand."""
    import torch

    sys.path.insert(0, str(BENCH))
    from run import handwritten_triton

    model = resnet18()
    print(f"ResNet-18: {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters")
    weights = work / "resnet18.pt"
    torch.jit.script(model).save(str(weights))
    repo, store = work / "triton", work / "torchserve"
    declared = {"inputs": [mfn.Tensor("image", "FP32", list(IMAGE))], "batching": {"max_batch_size": MAX_BATCH}}
    mfn.package(str(weights), repo, name="resnet_mfn", **declared)
    result = mfn.package(str(weights), store, server="torchserve", name="resnet_mfn", **declared)
    handwritten_triton(repo, "resnet_mfn", "resnet_hand", "resnet")
    handwritten_triton(repo, "resnet_mfn", FLOOR, "floor")
    handwritten_torchserve(store, result.spec, weights, "resnet_hand")
    handwritten_torchserve(store, result.spec, weights, FLOOR)
    return weights, repo, store


def handwritten_torchserve(store: Path, spec, weights: Path, name: str) -> None:
    import shutil

    from model_archiver.model_archiver_config import ModelArchiverConfig
    from model_archiver.model_packaging import package_model
    from model_archiver.model_packaging_utils import ModelExportUtils

    from mfn.archiver.render import render_model_config

    with tempfile.TemporaryDirectory() as scratch:
        extra = Path(scratch) / "extra"
        extra.mkdir()
        shutil.copyfile(weights, extra / "weights.pt")
        (Path(scratch) / "model-config.yaml").write_text(render_model_config(spec.model_copy(update={"name": name})))
        config = ModelArchiverConfig(
            model_name=name, handler=str(BENCH / "handwritten/torchserve_images.py"), version="1",
            extra_files=str(extra), export_path=str(store), config_file=str(Path(scratch) / "model-config.yaml"), force=True,
        )
        package_model(config, manifest=ModelExportUtils.generate_manifest_json(config))


# ---------------------------------------------------------------- callers: one image in, logits out


def mfn_caller(deployment: deployments.Deployment, protocol: str) -> tuple[Callable[[np.ndarray], np.ndarray], Callable[[], None]]:
    client = mfn.Client(deployment.name, protocol=protocol, timeout_s=120)
    return (lambda image: client.infer("resnet_mfn", {"image": image})["output"]), client.close


def hand_triton_caller(deployment: deployments.Deployment, protocol: str, model: str = "resnet_hand") -> tuple[Callable, Callable]:
    """The stock tritonclient: one gRPC client for all threads; one HTTP client per thread (it runs on gevent)."""
    clients: list = []
    per_thread = threading.local()
    key_header = "authorization" if protocol == "http" else GRPC_KEY_HEADER["triton"]
    headers = {key_header: f"Bearer {state.read_key(deployment, 'inference')}"}
    if protocol == "http":
        import tritonclient.http as module

        def client():
            if not hasattr(per_thread, "client"):
                per_thread.client = module.InferenceServerClient(f"{deployment.host}:{deployment.ports['http']}",
                                                                 connection_timeout=120, network_timeout=120)
                clients.append(per_thread.client)
            return per_thread.client
    else:
        import tritonclient.grpc as module

        shared = module.InferenceServerClient(f"{deployment.host}:{deployment.ports['grpc']}")
        clients.append(shared)

        def client():
            return shared

    def call(image: np.ndarray) -> np.ndarray:
        request = module.InferInput("image", list(image.shape), "FP32")
        request.set_data_from_numpy(image)
        return client().infer(model, [request], outputs=[module.InferRequestedOutput("output")],
                              headers=headers).as_numpy("output")

    def close() -> None:
        for each in clients:
            each.close()

    return call, close


def hand_torchserve_caller(deployment: deployments.Deployment, protocol: str, model: str = "resnet_hand") -> tuple[Callable, Callable]:
    from mfn.servers.torchserve.admin import read_key

    token = read_key(deployment, "inference")
    if protocol == "grpc":
        from mfn.client import torchserve_wire as torchserve_client
        from mfn.local.state import mfn_home

        channel = torchserve_client.GrpcChannel(f"{deployment.host}:{deployment.ports['grpc']}", mfn_home() / "cache")

        def call_grpc(image: np.ndarray) -> np.ndarray:
            reply = channel.infer(model, torchserve_client.Body(image.tobytes()), None, token, 120)
            return np.frombuffer(reply, dtype="<f4").reshape(len(image), 1000)

        return call_grpc, channel.close
    local_connections = threading.local()
    headers = {"Content-Type": "application/octet-stream", **({"Authorization": f"Bearer {token}"} if token else {})}

    def call_rest(image: np.ndarray) -> np.ndarray:
        connection = getattr(local_connections, "connection", None)
        if connection is None:
            connection = local_connections.connection = http.client.HTTPConnection(deployment.host, deployment.ports["http"], timeout=120)
            connection.connect()
            connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as any tuned client does
        connection.request("POST", f"/predictions/{model}", body=image.tobytes(), headers=headers)
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {body[:200]!r}")
        return np.frombuffer(body, dtype="<f4").reshape(len(image), 1000)

    return call_rest, lambda: None


CALLERS = {("triton", "hand"): hand_triton_caller, ("torchserve", "hand"): hand_torchserve_caller}


# ---------------------------------------------------------------- measurement


def server_counters(server: str, deployment: deployments.Deployment, model: str) -> dict[str, float]:
    """The server's cumulative time counters for one model, in ms, with the request count under "count"."""
    import urllib.request

    from mfn.prometheus_text import samples

    if server == "triton":
        request = urllib.request.Request(f"http://{deployment.host}:{deployment.ports['http']}/v2/models/{model}/stats",
                                         headers={"authorization": f"Bearer {state.read_key(deployment, 'management')}"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            stats = json.load(answer)["model_stats"][0]["inference_stats"]
        counters = {part: int(stats[part]["ns"]) / 1e6 for part in ("success", "queue", "compute_input", "compute_infer", "compute_output")}
        return {**counters, "count": int(stats["success"]["count"])}
    with urllib.request.urlopen(f"http://{deployment.host}:{deployment.ports['metrics']}/metrics", timeout=30) as answer:
        page = samples(answer.read().decode())
    mine = {sample.name: sample.value for sample in page if sample.labels.get("model_name") == model}
    return {"success": mine["ts_inference_latency_microseconds"] / 1000, "queue": mine["ts_queue_latency_microseconds"] / 1000,
            "count": mine.get("ts_inference_requests_total", mine.get("ts_inference_requests", 0.0))}


def per_call(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Each counter's time per call; empty where the server counted no calls (TorchServe counts only REST)."""
    calls = after["count"] - before["count"]
    counted = calls and after["success"] > before["success"]  # TorchServe counts gRPC calls but not their time
    return {part: (after[part] - before[part]) / calls for part in after if part != "count"} if counted else {}


def latency(call: Callable, image: np.ndarray, count: int) -> tuple[float, float, float]:
    """Median and mean ms of sequential calls, and the calling process's CPU ms per call (the mean is what a
    server's time counters can be set against)."""
    times = []
    cpu_start = time.process_time()
    for _ in range(count):
        started = time.perf_counter()
        call(image)
        times.append(time.perf_counter() - started)
    cpu = (time.process_time() - cpu_start) / count
    return statistics.median(times) * 1000, statistics.fmean(times) * 1000, cpu * 1000


def throughput(call: Callable, image: np.ndarray, duration_s: float) -> float:
    """Images per second with CONCURRENCY threads calling one image at a time."""
    done = [0] * CONCURRENCY
    stop = time.perf_counter() + duration_s
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            while time.perf_counter() < stop:
                call(image)
                done[index] += 1
        except BaseException as error:  # noqa: BLE001 - reported below: a failed run must not pass for a slow one
            errors.append(error)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(index,)) for index in range(CONCURRENCY)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"load failed: {errors[0]}")
    return sum(done) / (time.perf_counter() - started)


def load_model(weights: Path):
    """The model as mfn loads it in-process: the built-in TorchScript handler behind mfn's own batch loop."""
    from mfn.packaging import resolve
    from mfn.runtime.bundle import load_in_process

    source = resolve(str(weights), inputs=[mfn.Tensor("image", "FP32", list(IMAGE))], batching={"max_batch_size": MAX_BATCH})
    loaded = load_in_process(source.cls, source.spec, source.handler_file, source.artifact_root)
    four = np.random.default_rng(0).standard_normal((CONCURRENCY, *IMAGE), dtype=np.float32)
    for _ in range(5):
        loaded.loop.run([{"image": four}])
    return loaded


def in_process(loaded, rounds: int) -> dict[str, float]:
    """predict's median time on one image and images/s on batches of CONCURRENCY."""
    rng = np.random.default_rng(0)
    one, four = rng.standard_normal((1, *IMAGE), dtype=np.float32), rng.standard_normal((CONCURRENCY, *IMAGE), dtype=np.float32)
    single = [timed(lambda: loaded.loop.run([{"image": one}])) for _ in range(rounds)]
    batch = [timed(lambda: loaded.loop.run([{"image": four}])) for _ in range(rounds)]
    return {"predict_ms": statistics.median(single) * 1000, "ceiling_images_per_s": CONCURRENCY / statistics.median(batch),
            "one_at_a_time_images_per_s": 1 / statistics.median(single)}


def timed(call: Callable) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def measure_server(server: str, deployment: deployments.Deployment, rounds: int, sequential: int, duration_s: float,  # noqa: PLR0913
                   reference: np.ndarray, image: np.ndarray, ceiling: Callable[[], dict[str, float]]) -> list[dict]:
    """Rows per protocol and implementation; the in-process ceiling is measured in every round as well, so
    that its ratios compare measurements taken minutes, not a quarter of an hour, apart."""
    rows = []
    for protocol in ("http", "grpc"):
        callers = {"mfn": mfn_caller(deployment, protocol), "hand": CALLERS[(server, "hand")](deployment, protocol),
                   "floor": CALLERS[(server, "hand")](deployment, protocol, FLOOR)}
        samples: dict[str, dict[str, list[float]]] = {impl: {"latency_ms": [], "mean_latency_ms": [], "client_cpu_ms": [], "images_per_s": []}
                                                      for impl in ("mfn", "hand")}
        floors: list[float] = []
        splits: dict[str, list[dict[str, float]]] = {impl: [] for impl in ("mfn", "hand")}
        ceilings: list[dict[str, float]] = []
        try:
            for impl, (call, _) in callers.items():
                answer = call(image)
                if impl != "floor":
                    np.testing.assert_allclose(answer, reference, rtol=1e-3, atol=1e-3)  # served answers are the model's
                for _ in range(5):
                    call(image)
            for round_index in range(rounds):
                ceilings.append(ceiling())
                floors.append(latency(callers["floor"][0], image, sequential)[0])
                for impl in (("mfn", "hand") if round_index % 2 == 0 else ("hand", "mfn")):
                    call = callers[impl][0]
                    before = server_counters(server, deployment, f"resnet_{impl}")
                    median_ms, mean_ms, cpu_ms = latency(call, image, sequential)
                    splits[impl].append(per_call(before, server_counters(server, deployment, f"resnet_{impl}")))
                    samples[impl]["latency_ms"].append(median_ms)
                    samples[impl]["mean_latency_ms"].append(mean_ms)
                    samples[impl]["client_cpu_ms"].append(cpu_ms)
                    samples[impl]["images_per_s"].append(throughput(call, image, duration_s))
        finally:
            for _, close in callers.values():
                close()
        in_process_row = {key: statistics.median(each[key] for each in ceilings) for key in ceilings[0]}
        for impl, values in samples.items():
            counted = [each for each in splits[impl] if each]
            split = {part: statistics.median(each[part] for each in counted) for part in counted[0]} if counted else {}
            row = {"server": server, "protocol": protocol, "implementation": impl, "in_process": in_process_row,
                   **{key: statistics.median(series) for key, series in values.items()}, "server_ms": split,
                   "floor_ms": statistics.median(floors), "rounds": values}
            rows.append(row)
            print(f"  {server:10} {protocol:4} {impl:4}  latency {row['latency_ms']:7.1f} ms  client CPU {row['client_cpu_ms']:6.2f} ms"
                  f"  c={CONCURRENCY} {row['images_per_s']:6.1f} images/s  (in-process {in_process_row['predict_ms']:.1f} ms,"
                  f" {in_process_row['ceiling_images_per_s']:.1f} images/s)")
    return rows


def render(result: dict) -> str:
    lines = [
        SECTION_START,
        "## Images: ResNet-18-sized TorchScript, binary tensors on both servers",
        "",
        f"Command: `{result['command']}` on {result['machine']} ({result['date']}). Input FP32[3,224,224] (602 KB), "
        f"output FP32[1000], max_batch_size {MAX_BATCH}; medians of {result['rounds']} alternating rounds, each "
        f"{result['sequential']} sequential one-image calls and {result['duration_s']:g} s at concurrency {CONCURRENCY}.",
        f"In-process (measured in every round beside the served runs): `predict` on one image, and the ceiling, "
        f"images/s of `predict` on batches of {CONCURRENCY} in a loop. Server floor: the same call to a hand-written "
        "model that runs nothing (the stock client), the server's own cost per call on this machine.",
        "",
        "| server | protocol | implementation | latency ms | in-process ms | latency / in-process | goal ms (×1.1 + 1) | "
        "server floor ms | in-process + floor | "
        f"client CPU ms per image | images/s at c={CONCURRENCY} | ceiling images/s | served / ceiling | one at a time images/s | "
        "served / one at a time |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        ceiling = row["in_process"]
        goal = ceiling["predict_ms"] * 1.1 + 1
        lines.append(
            f"| {row['server']} | {row['protocol']} | {row['implementation']} | {row['latency_ms']:.1f} | {ceiling['predict_ms']:.1f} | "
            f"{row['latency_ms'] / ceiling['predict_ms']:.2f} | {goal:.1f} {'met' if row['latency_ms'] <= goal else 'missed'} | "
            f"{row['floor_ms']:.1f} | {ceiling['predict_ms'] + row['floor_ms']:.1f} | "
            f"{row['client_cpu_ms']:.2f} | {row['images_per_s']:.1f} | "
            f"{ceiling['ceiling_images_per_s']:.1f} | {row['images_per_s'] / ceiling['ceiling_images_per_s']:.2f} | "
            f"{ceiling['one_at_a_time_images_per_s']:.1f} | {row['images_per_s'] / ceiling['one_at_a_time_images_per_s']:.2f} |"
        )
    lines += [
        "",
        "Where one sequential call's time goes (mean ms per call, medians over rounds, from the server's counters). Triton: queue, "
        "input (request into the backend), model (the Python backend's execute: the stub, mfn's adapter or the hand-written "
        "model.py, and `predict`), output (response back); TorchServe: its frontend's queue (which includes the batch delay) "
        "and its total, from request received to response sent, worker and `predict` included. Outside: what neither server "
        "counts — the client, the transport and the server's own request parsing. TorchServe times REST calls only, so its "
        "gRPC rows are left out.",
        "",
        "| server | protocol | implementation | mean latency | server total | queue | input | model | output | outside |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        split = row["server_ms"]
        if not split:
            continue
        parts = [split.get(part) for part in ("queue", "compute_input", "compute_infer", "compute_output")]
        cells = " | ".join("–" if part is None else f"{part:.2f}" for part in parts)
        lines.append(f"| {row['server']} | {row['protocol']} | {row['implementation']} | {row['mean_latency_ms']:.2f} | "
                     f"{split['success']:.2f} | {cells} | {row['mean_latency_ms'] - split['success']:.2f} |")
    lines += ["", SECTION_END]
    return "\n".join(lines)


def write_section(markdown: Path, section: str, start: str = SECTION_START, end: str = SECTION_END) -> None:
    """Put `section` (which begins with `start` and ends with `end`) in place of the marked one, or at the end."""
    text = markdown.read_text() if markdown.exists() else ""
    if start in text and end in text:
        before, rest = text.split(start, 1)
        text = before + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    markdown.write_text(text)


def publish(section: str, write: bool, start: str, end: str) -> None:
    """Print a benchmark's section and, with `write`, put it into BENCHMARKS.md in place of its previous run."""
    print(section)
    if write:
        write_section(ROOT / "BENCHMARKS.md", section, start, end)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sequential", type=int, default=30, help="Sequential calls per latency sample.")
    parser.add_argument("--duration", type=float, default=8.0, help="Seconds of load per throughput sample.")
    parser.add_argument("--servers", default="triton,torchserve")
    parser.add_argument("--no-write", action="store_true", help="Print only; leave BENCHMARKS.md and results/ alone.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mfn-images-") as scratch:
        work = Path(scratch)
        weights, repo, store = build(work)
        loaded = load_model(weights)
        image = np.random.default_rng(1).standard_normal((1, *IMAGE), dtype=np.float32)
        import torch

        with torch.inference_mode():
            reference = torch.jit.load(str(weights))(torch.from_numpy(image)).numpy()
        rows = []
        for server in args.servers.split(","):
            # resnet_hand, hand-written, carries no digest manifest: nothing to verify there.
            # Keyed: every caller sends the key, and nothing stands between them and the server.
            deployment = deployments.deploy(repo if server == "triton" else store, name=f"bench-images-{server}", verify=False)
            try:
                rows += measure_server(server, deployment, args.rounds, args.sequential, args.duration, reference, image,
                                       lambda: in_process(loaded, rounds=10))
            finally:
                deployments.undeploy(deployment.name)
        loaded.close()
    result = {
        "command": "python benchmarks/images.py" + "".join(f" {arg}" for arg in sys.argv[1:]),
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} CPUs, Python {platform.python_version()}",
        "date": stamp(), "rounds": args.rounds, "sequential": args.sequential,
        "duration_s": args.duration, "rows": rows,
    }
    section = render(result)
    print(section)
    if not args.no_write:
        (BENCH / "results").mkdir(exist_ok=True)
        (BENCH / "results/images.json").write_text(json.dumps(result, indent=2) + "\n")
        write_section(ROOT / "BENCHMARKS.md", section)


if __name__ == "__main__":
    main()
