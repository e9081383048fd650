"""`--idle-timeout`: what the front costs per request, and how long a wake-up takes, on both servers.

Per request: the example `text_stats` (one BYTES row) on one deployment with a front (idle timeout of an
hour, so it never sleeps), called one request at a time with mfn.Client, in alternating rounds, through the
front's public port and directly on the server's own port; median wall time per call, HTTP and gRPC.

Wake-up: a deployment with a 1 s idle timeout; each round waits until the server is stopped, then times one
request from sending to its answer (the request is held while the server starts with every model loaded),
beside the supervisor's own figure (`mfn status`: last wake-up).

Run: `python benchmarks/idle_front.py [--calls 1000] [--wakes 3]`; results in benchmarks/results/idle_front.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import mfn  # noqa: E402
from benchmarks.alternating import added_cost  # noqa: E402
from mfn.local import deployments, state  # noqa: E402
from mfn.local.supervision import read_status  # noqa: E402

HANDLER = f"{ROOT / 'examples/text_stats/handler.py'}:text_stats"
INPUTS = {"text": [["through the front"]]}


def front_cost(server: str, store: Path, calls: int) -> dict[str, dict[str, float]]:
    deployment = deployments.deploy(store, name=f"front-{server}", idle_timeout_s=3600.0, verify=False)
    try:
        results = {}
        for protocol in ("http", "grpc"):
            direct_url = f"{protocol}://{deployment.host}:{deployment.ports[protocol]}"
            key = state.read_key(deployment, "inference")
            with mfn.Client(deployment.name, protocol=protocol) as through, \
                    mfn.Client(direct_url, server=server, token=key) as direct:
                results[protocol] = added_cost("front", through, direct, "text_stats", INPUTS, calls)
        return results
    finally:
        deployments.undeploy(deployment.name)


def wake_ups(server: str, store: Path, wakes: int) -> dict[str, float]:
    deployment = deployments.deploy(store, name=f"wake-{server}", idle_timeout_s=1.0, verify=False)
    try:
        answered, supervisor = [], []
        for _ in range(wakes):
            deadline = time.monotonic() + 60
            while read_status(deployment).state != "idle" and time.monotonic() < deadline:
                time.sleep(0.1)
            with mfn.Client(deployment.name, retries=0, timeout_s=300) as client:
                started = time.monotonic()
                client.infer("text_stats", INPUTS)
                answered.append(time.monotonic() - started)
            supervisor.append(read_status(deployment).last_wake_s)
        return {"first_answer_s": round(statistics.median(answered), 3), "wake_s": round(statistics.median(supervisor), 3)}
    finally:
        deployments.undeploy(deployment.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000, help="Calls per protocol and path, in 10 alternating rounds.")
    parser.add_argument("--wakes", type=int, default=3, help="Wake-ups timed per server.")
    options = parser.parse_args()
    results = {}
    for server in ("triton", "torchserve"):
        with tempfile.TemporaryDirectory() as packaged:
            store = Path(packaged) / "store"
            mfn.package(HANDLER, store, server=server)
            results[server] = {"per_call": front_cost(server, store, options.calls), "wake": wake_ups(server, store, options.wakes)}
        print(server, json.dumps(results[server]), flush=True)
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    (out / "idle_front.json").write_text(json.dumps(results, indent=2))
    print("| server | protocol | direct | through the front | added |")
    print("| --- | --- | --- | --- | --- |")
    for server, result in results.items():
        for protocol, row in result["per_call"].items():
            print(f"| {server} | {protocol} | {row['direct_us']:.0f} µs | {row['front_us']:.0f} µs | {row['added_us']:+.0f} µs |")
    print("| server | wake-up (supervisor) | request sent → answered |")
    print("| --- | --- | --- |")
    for server, result in results.items():
        print(f"| {server} | {result['wake']['wake_s']:.2f} s | {result['wake']['first_answer_s']:.2f} s |")


if __name__ == "__main__":
    main()
