"""Streaming: time to first chunk and cost per chunk, mfn's adapters against hand-written streaming server code.

Both implementations serve the same model (benchmarks/models/steps: `count` chunks of one token, no compute)
with the same batching config, in the same server: a hand-written decoupled TritonPythonModel and a hand-written
TorchServe handler sending intermediate responses. One client per server reads both the same way, one stream at
a time: Triton over gRPC (ModelStreamInfer, tritonclient), TorchServe over REST (chunked JSON lines). Rounds
alternate between the two implementations. Reported per implementation: median and p90 time to the first chunk,
and median time per later chunk ((last - first) / (chunks - 1)).

Run: `python benchmarks/streaming.py [--streams 400] [--chunks 32]`; results in benchmarks/results/streaming.json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import queue
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import mfn
from mfn.local import deployments
from mfn.local.state import read_key
from mfn.packaging import build_spec
from provenance import stamp

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
STEPS = f"{BENCH / 'models/steps/handler.py'}:Steps"
ROUNDS = 4
WARM_UP_STREAMS = 20
SECTION_START, SECTION_END = "<!-- streaming:start -->", "<!-- streaming:end -->"


def package(work: Path) -> tuple[Path, Path]:
    repo, store = work / "triton", work / "torchserve"
    mfn.package(STEPS, repo, name="steps_mfn")
    mfn.package(STEPS, store, server="torchserve", name="steps_mfn")
    config = (repo / "steps_mfn" / "config.pbtxt").read_text()
    (repo / "steps_hand" / "1").mkdir(parents=True)
    (repo / "steps_hand" / "config.pbtxt").write_text(config.replace('name: "steps_mfn"', 'name: "steps_hand"'))
    shutil.copyfile(BENCH / "handwritten/triton_streaming.py", repo / "steps_hand" / "1" / "model.py")
    _handwritten_archive(store)
    return repo, store


def _handwritten_archive(store: Path) -> None:
    from model_archiver.model_archiver_config import ModelArchiverConfig
    from model_archiver.model_packaging import package_model
    from model_archiver.model_packaging_utils import ModelExportUtils

    from mfn.archiver.render import render_model_config

    _, _, spec = build_spec(STEPS, name="steps_hand")
    with tempfile.TemporaryDirectory() as scratch:
        (Path(scratch) / "model-config.yaml").write_text(render_model_config(spec))
        config = ModelArchiverConfig(
            model_name="steps_hand", handler=str(BENCH / "handwritten/torchserve_streaming.py"), version="1",
            export_path=str(store), config_file=str(Path(scratch) / "model-config.yaml"), force=True,
        )
        package_model(config, manifest=ModelExportUtils.generate_manifest_json(config))


def triton_streams(deployment, model: str, streams: int, chunks: int) -> list[tuple[float, float]]:
    import tritonclient.grpc as grpcclient

    answers: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(deployment.grpc_url)
    key = read_key(deployment, "inference")
    client.start_stream(lambda result, error: answers.put((result, error)),
                        headers={"triton-grpc-protocol-authorization": f"Bearer {key}"} if key else None)
    count = grpcclient.InferInput("count", [1, 1], "INT32")
    count.set_data_from_numpy(np.array([[chunks]], np.int32))
    timings = []
    try:
        for _ in range(streams):
            arrivals = []
            started = time.perf_counter()
            client.async_stream_infer(model, [count], enable_empty_final_response=True)
            while True:
                result, error = answers.get(timeout=30)
                if error is not None:
                    raise RuntimeError(f"{model}: {error}")
                response = result.get_response()
                if response.outputs:
                    arrivals.append(time.perf_counter())
                if response.parameters["triton_final_response"].bool_param:
                    break
            timings.append(_timing(started, arrivals, chunks, model))
    finally:
        client.stop_stream()
        client.close()
    return timings


def torchserve_streams(deployment, model: str, streams: int, chunks: int) -> list[tuple[float, float]]:
    body = json.dumps({"inputs": [{"name": "count", "shape": [1, 1], "datatype": "INT32", "data": [chunks]}]}).encode()
    headers = {"Content-Type": "application/json"}
    key = read_key(deployment, "inference")
    if key:
        headers["Authorization"] = f"Bearer {key}"
    connection = http.client.HTTPConnection(deployment.host, deployment.ports["http"], timeout=30)
    timings = []
    try:
        for _ in range(streams):
            arrivals = []
            started = time.perf_counter()
            connection.request("POST", f"/predictions/{model}", body=body, headers=headers)
            response = connection.getresponse()
            while line := response.readline():
                if line.strip() and not json.loads(line).get("end"):
                    arrivals.append(time.perf_counter())
            timings.append(_timing(started, arrivals, chunks, model))
    finally:
        connection.close()
    return timings


def _timing(started: float, arrivals: list[float], chunks: int, model: str) -> tuple[float, float]:
    if len(arrivals) != chunks:
        raise RuntimeError(f"{model}: {len(arrivals)} chunks for {chunks}")
    return arrivals[0] - started, (arrivals[-1] - arrivals[0]) / (chunks - 1)


def measure(deployment, server: str, streams: int, chunks: int) -> dict[str, list[tuple[float, float]]]:
    run = triton_streams if server == "triton" else torchserve_streams
    samples: dict[str, list[tuple[float, float]]] = {"mfn": [], "hand": []}
    for implementation in samples:
        run(deployment, f"steps_{implementation}", WARM_UP_STREAMS, chunks)
    for _ in range(ROUNDS):
        for implementation in samples:
            samples[implementation] += run(deployment, f"steps_{implementation}", streams // ROUNDS, chunks)
    return samples


def summary(samples: list[tuple[float, float]]) -> dict[str, float]:
    first = sorted(sample[0] for sample in samples)
    return {
        "first_chunk_p50_ms": statistics.median(first) * 1000,
        "first_chunk_p90_ms": first[int(0.9 * (len(first) - 1))] * 1000,
        "per_chunk_p50_us": statistics.median(sample[1] for sample in samples) * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=400, help="Streams per implementation and server.")
    parser.add_argument("--chunks", type=int, default=32, help="Chunks per stream.")
    parser.add_argument("--no-write", action="store_true", help="Print the section without writing BENCHMARKS.md.")
    options = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="mfn-stream-bench-") as scratch:
        repo, store = package(Path(scratch))
        for server, path in (("triton", repo), ("torchserve", store)):
            deployment = deployments.deploy(path, name=f"stream-bench-{server}", verify=False)  # hand-written: no manifest
            try:
                samples = measure(deployment, server, options.streams, options.chunks)
            finally:
                deployments.undeploy(deployment.name)
            for implementation, timings in samples.items():
                results.append({"server": server, "implementation": implementation, "streams": len(timings),
                                "chunks": options.chunks, **summary(timings)})
    print(f"{'server':11} {'impl':5} {'first chunk p50':>16} {'p90':>9} {'per chunk p50':>14}")
    for row in results:
        print(f"{row['server']:11} {row['implementation']:5} {row['first_chunk_p50_ms']:13.3f} ms "
              f"{row['first_chunk_p90_ms']:6.3f} ms {row['per_chunk_p50_us']:11.1f} µs")
    command = " ".join(["python", "benchmarks/streaming.py", *sys.argv[1:]])
    output = BENCH / "results" / "streaming.json"
    output.write_text(json.dumps({"command": command, "results": results}, indent=2) + "\n")
    from images import publish

    publish(section(results, command, options.streams, options.chunks), not options.no_write, SECTION_START, SECTION_END)


def section(results: list[dict], command: str, streams: int, chunks: int) -> str:
    """The BENCHMARKS.md section for one run: the method, the table, and what mfn adds on each server."""
    names = {"triton": "Triton", "torchserve": "TorchServe"}
    rows = [f"| {names[row['server']]} | {'mfn' if row['implementation'] == 'mfn' else 'hand-written'} | "
            f"{row['first_chunk_p50_ms']:.2f} ms | {row['first_chunk_p90_ms']:.2f} ms | {row['per_chunk_p50_us']:.0f} µs |"
            for row in results]
    by = {(row["server"], row["implementation"]): row for row in results}
    added = "; ".join(
        f"{names[server]}: {by[server, 'mfn']['first_chunk_p50_ms'] - by[server, 'hand']['first_chunk_p50_ms']:+.2f} ms to "
        f"the first chunk, {by[server, 'mfn']['per_chunk_p50_us'] - by[server, 'hand']['per_chunk_p50_us']:+.0f} µs per later chunk"
        for server in names if (server, "mfn") in by and (server, "hand") in by)
    return "\n".join([
        SECTION_START,
        f"## Streaming: time to first chunk and cost per chunk ({stamp()})",
        "",
        f"Command: `{command}` (also run by `make bench`). Model `benchmarks/models/steps`: {chunks} chunks of one "
        "token per row, no compute between them, batching on (max 8, 100 µs queue delay), so the figures are the "
        "servers' and adapters' own cost. mfn's adapters against a hand-written decoupled `TritonPythonModel` "
        "(`benchmarks/handwritten/triton_streaming.py`) and a hand-written TorchServe handler sending intermediate "
        "responses (`benchmarks/handwritten/torchserve_streaming.py`), same config, same server, one stream at a "
        f"time, {WARM_UP_STREAMS} warm-up streams each, then {ROUNDS} alternating rounds of {streams // ROUNDS} "
        "streams. One client per server reads both: Triton over gRPC (`ModelStreamInfer`, tritonclient), "
        "TorchServe over REST (chunked JSON lines).",
        "",
        "| server | implementation | first chunk p50 | first chunk p90 | per later chunk p50 |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"What mfn adds (medians, mfn minus hand-written): {added}.",
        SECTION_END,
    ])


if __name__ == "__main__":
    main()
