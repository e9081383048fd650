"""What a response cache saves: one request's latency on a hit and on a miss, for a model that takes 20 ms.

The handler tests/handlers/counted.py sleeps as many milliseconds as its first input value says (20 here). It is
packaged three times per server: with a local cache and fixed per-row dims (Triton's own response cache; TorchServe:
mfn's LRU per worker), with a local cache and a variable dim (mfn's LRU on both servers), and with a Redis cache (a
redis-server on loopback); each is called one request at a time with mfn.Client over HTTP and gRPC: a miss sends an
input not sent before, a hit repeats one. Rounds alternate miss and hit; medians and p99.

Run: `python benchmarks/cache_latency.py` (needs `make setup`: redis-server); it prints the table and writes the
"Response cache" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import mfn  # noqa: E402
from mfn.local import deployments  # noqa: E402
from mfn.servers.process import find_tool, free_ports  # noqa: E402

SECTION_START, SECTION_END = "<!-- cache:start -->", "<!-- cache:end -->"
COUNTED = f"{ROOT / 'tests/handlers/counted.py'}:Counted"
MODEL_MS = 20.0
KIND_LABELS = {"local": "local, fixed dims", "variable": "local, a -1 dim", "redis": "redis"}
_unique = itertools.count(1)


def start_redis(directory: str) -> tuple[subprocess.Popen, str]:
    (port,) = free_ports(1)
    process = subprocess.Popen([find_tool("redis-server", "run `make setup` for redis-server"), "--port", str(port),
                                "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", directory],
                               stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"redis://127.0.0.1:{port}/0"
    import redis

    for _ in range(100):
        try:
            redis.Redis.from_url(url, socket_timeout=1).ping()
            return process, url
        except redis.RedisError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("redis-server did not answer")


def latencies_ms(client: mfn.Client, model: str, calls: int, hit: bool) -> list[float]:
    repeated = np.array([[MODEL_MS, -1.0]], dtype=np.float32)
    client.infer(model, {"x": repeated})  # stored before the hits are timed
    times = []
    for _ in range(calls):
        x = repeated if hit else np.array([[MODEL_MS, -float(next(_unique))]], dtype=np.float32)
        started = time.perf_counter()
        client.infer(model, {"x": x})
        times.append((time.perf_counter() - started) * 1000)
    return times


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--calls", type=int, default=50, help="Calls per round and kind of call.")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="mfn-cache-") as scratch:
        redis_process, url = start_redis(scratch)
        try:
            for server in ("triton", "torchserve"):
                store = Path(scratch) / server
                mfn.package(f"{COUNTED}Fixed", store, server=server, name="slow_local")
                mfn.package(COUNTED, store, server=server, name="slow_variable")
                mfn.package(COUNTED, store, server=server, name="slow_redis", cache=mfn.Cache(kind="redis", url=url))
                deployment = deployments.deploy(store, name=f"bench-cache-{server}")
                try:
                    for kind, protocol in itertools.product(("local", "variable", "redis"), ("http", "grpc")):
                        with mfn.Client(deployment.name, protocol=protocol) as client:
                            measured: dict[bool, list[float]] = {False: [], True: []}
                            for index in range(args.rounds):
                                for hit in ((False, True) if index % 2 == 0 else (True, False)):
                                    measured[hit] += latencies_ms(client, f"slow_{kind}", args.calls, hit)
                        rows.append((server, kind, protocol, statistics.median(measured[False]), p99(measured[False]),
                                     statistics.median(measured[True]), p99(measured[True])))
                        print(*rows[-1][:3], " ".join(f"{value:.2f}" for value in rows[-1][3:]), flush=True)
                finally:
                    deployments.undeploy(deployment.name)
        finally:
            redis_process.terminate()
            redis_process.wait(10)
    lines = [
        SECTION_START,
        f"## Response cache: a hit against a miss, {MODEL_MS:.0f} ms model ({time.strftime('%Y-%m-%d')})",
        "",
        f"Command: `python benchmarks/cache_latency.py`; {args.rounds} alternating rounds of {args.calls} sequential "
        "one-row calls with mfn.Client per cell and kind of call; a miss sends a new input, a hit repeats a stored one; "
        "milliseconds per call.",
        "",
        "| server | cache | protocol | miss p50 | miss p99 | hit p50 | hit p99 |",
        "|---|---|---|---:|---:|---:|---:|",
        *(f"| {server} | {KIND_LABELS[kind]} | {protocol} | {miss50:.2f} | {miss99:.2f} | {hit50:.2f} | {hit99:.2f} |"
          for server, kind, protocol, miss50, miss99, hit50, hit99 in rows),
        "",
        SECTION_END,
    ]
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from images import publish

    publish("\n".join(lines), not args.no_write, SECTION_START, SECTION_END)


if __name__ == "__main__":
    main()
