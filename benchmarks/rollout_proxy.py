"""The rollout proxy (nginx) on the request path: what it adds to one request, on both servers, HTTP and gRPC;
and how long a weight change and a promotion take.

Per request: the example `text_stats` (one BYTES row), one request at a time with mfn.Client, in alternating
rounds, through the proxy (the deployment's endpoints after a rollout; here a canary at 0%, so every request goes
to the primary) and directly on the primary server's own port; median wall time per call.

Run: `python benchmarks/rollout_proxy.py [--calls 1000]`; results in benchmarks/results/rollout_proxy.json.
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
from mfn.proxy import rollout  # noqa: E402

HANDLER = f"{ROOT / 'examples/text_stats/handler.py'}:text_stats"
INPUTS = {"text": [["through the proxy"]]}


def proxy_cost(server: str, store: Path, calls: int) -> dict:
    name = f"proxy-{server}"
    deployment = deployments.deploy(store, name=name, verify=False)
    try:
        rollout.start(name, rollout.plan("canary", store, name, weight=0))
        results = {}
        for protocol in ("http", "grpc"):
            direct_url = f"{protocol}://{deployment.host}:{deployment.ports[protocol]}"
            key = state.read_key(deployment, "inference")
            with mfn.Client(name, protocol=protocol) as through, \
                    mfn.Client(direct_url, server=server, token=key) as direct:
                results[protocol] = added_cost("proxy", through, direct, "text_stats", INPUTS, calls)
        changes = []
        for weight in (10, 20, 30, 40, 50):
            started = time.perf_counter()
            rollout.set_weight(name, weight, "benchmark")
            changes.append(time.perf_counter() - started)
        results["weight_change_s"] = round(statistics.median(changes), 3)
        started = time.perf_counter()
        rollout.promote(name)
        results["promote_s"] = round(time.perf_counter() - started, 2)
        return results
    finally:
        deployments.undeploy(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000, help="Calls per protocol and path, in 10 alternating rounds.")
    options = parser.parse_args()
    results = {}
    for server in ("triton", "torchserve"):
        with tempfile.TemporaryDirectory() as packaged:
            store = Path(packaged) / "store"
            mfn.package(HANDLER, store, server=server)
            results[server] = proxy_cost(server, store, options.calls)
        print(server, json.dumps(results[server]), flush=True)
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    (out / "rollout_proxy.json").write_text(json.dumps(results, indent=2))
    print("| server | protocol | direct | through the proxy | added |")
    print("| --- | --- | --- | --- | --- |")
    for server, result in results.items():
        for protocol in ("http", "grpc"):
            row = result[protocol]
            print(f"| {server} | {protocol} | {row['direct_us']:.0f} µs | {row['proxy_us']:.0f} µs | {row['added_us']:+.0f} µs |")
    for server, result in results.items():
        print(f"{server}: weight change {result['weight_change_s']} s, promote {result['promote_s']} s")


if __name__ == "__main__":
    main()
