"""What mfn.Client costs per call over the stock tritonclient, on a real Triton, for a small model.

Both call the example `mlp` (one FP32[4] row) on the same local deployment, one call at a time, in
alternating rounds: the median wall time per call and the calling process's CPU time per call, over HTTP
and gRPC. mfn.Client does more per call (it checks and casts the inputs against the model's declaration,
and retries on restarts); this measures what that costs.

Run: `python benchmarks/client_overhead.py` (part of `make bench`); it prints a table and writes the
"Client overhead" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import mfn  # noqa: E402
from mfn.local import deployments, state  # noqa: E402
from mfn.proxy.nginx_config import GRPC_KEY_HEADER  # noqa: E402
from provenance import stamp  # noqa: E402

SECTION_START, SECTION_END = "<!-- client:start -->", "<!-- client:end -->"
ROW = np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)


def stock_caller(deployment: deployments.Deployment, protocol: str):
    if protocol == "http":
        import tritonclient.http as module

        client = module.InferenceServerClient(f"{deployment.host}:{deployment.ports['http']}")
    else:
        import tritonclient.grpc as module

        client = module.InferenceServerClient(f"{deployment.host}:{deployment.ports['grpc']}")
    outputs = [module.InferRequestedOutput("probs"), module.InferRequestedOutput("label")]
    key_header = "authorization" if protocol == "http" else GRPC_KEY_HEADER["triton"]
    headers = {key_header: f"Bearer {state.read_key(deployment, 'inference')}"}

    def call() -> None:
        request = module.InferInput("features", [1, 4], "FP32")
        request.set_data_from_numpy(ROW)
        result = client.infer("mlp", [request], outputs=outputs, headers=headers)
        result.as_numpy("probs"), result.as_numpy("label")

    return call, client.close


def mfn_caller(deployment: deployments.Deployment, protocol: str):
    client = mfn.Client(deployment.name, protocol=protocol)

    def call() -> None:
        client.infer("mlp", {"features": ROW})

    return call, client.close


def sample(call, count: int) -> tuple[float, float]:
    """Median wall µs per call and CPU µs per call of `count` sequential calls."""
    times = []
    cpu = time.process_time()
    for _ in range(count):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e6, (time.process_time() - cpu) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="mfn-client-") as scratch:
        mfn.package(f"{ROOT / 'examples/mlp/handler.py'}:MLP", Path(scratch))
        deployment = deployments.deploy(scratch, name="bench-client")  # keyed: both clients send the key
        try:
            for protocol in ("http", "grpc"):
                callers = {"mfn.Client": mfn_caller(deployment, protocol), "tritonclient": stock_caller(deployment, protocol)}
                results: dict[str, list[tuple[float, float]]] = {name: [] for name in callers}
                try:
                    for call, _ in callers.values():
                        sample(call, 50)  # connections, metadata, lazy imports
                    for index in range(args.rounds):
                        for name in (list(callers) if index % 2 == 0 else list(reversed(callers))):
                            results[name].append(sample(callers[name][0], args.calls))
                finally:
                    for _, close in callers.values():
                        close()
                wall = {name: statistics.median(wall for wall, _ in values) for name, values in results.items()}
                cpu = {name: statistics.median(cpu for _, cpu in values) for name, values in results.items()}
                # Per round, back to back: the difference that drift on a shared machine hits least.
                deltas = [m[0] - s[0] for m, s in zip(results["mfn.Client"], results["tritonclient"])]
                cpu_deltas = [m[1] - s[1] for m, s in zip(results["mfn.Client"], results["tritonclient"])]
                rows.append({"protocol": protocol, "wall_us": wall, "cpu_us": cpu,
                             "delta_wall_us": statistics.median(deltas), "delta_cpu_us": statistics.median(cpu_deltas)})
                print(f"{protocol}: wall mfn {wall['mfn.Client']:.0f} µs, stock {wall['tritonclient']:.0f} µs "
                      f"(+{rows[-1]['delta_wall_us']:.0f}); CPU mfn {cpu['mfn.Client']:.0f} µs, stock {cpu['tritonclient']:.0f} µs "
                      f"(+{rows[-1]['delta_cpu_us']:.0f})")
        finally:
            deployments.undeploy(deployment.name)
    lines = [
        SECTION_START,
        "## Client overhead: mfn.Client against the stock tritonclient (Triton, example `mlp`)",
        "",
        f"Command: `python benchmarks/client_overhead.py` ({stamp()}); {args.rounds} alternating rounds of "
        f"{args.calls} sequential one-row calls; medians; the difference is the median of per-round differences.",
        "",
        "| protocol | mfn.Client µs/call | tritonclient µs/call | difference µs | mfn.Client CPU µs/call | tritonclient CPU µs/call | difference µs |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(f"| {row['protocol']} | {row['wall_us']['mfn.Client']:.0f} | {row['wall_us']['tritonclient']:.0f} | "
                     f"{row['delta_wall_us']:+.0f} | {row['cpu_us']['mfn.Client']:.0f} | {row['cpu_us']['tritonclient']:.0f} | "
                     f"{row['delta_cpu_us']:+.0f} |")
    lines += ["", SECTION_END]
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from images import publish

    publish("\n".join(lines), not args.no_write, SECTION_START, SECTION_END)


if __name__ == "__main__":
    main()
