"""mfn's soak test: sustained load on each server while workers and the server itself are killed.

Run with `make soak` (about 10 minutes per server by default; never part of CI). For each server it
packages the MLP example, deploys it locally, sends one-row requests from `--concurrency` threads through
mfn.Client (with its retries), kills a model worker every `--kill-worker-every-s` seconds and the whole
server once half-way, and checks every answer against the handler run in-process. Results go to
benchmarks/results/soak.json and RELIABILITY.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

import mfn
from mfn.local import deployments
from mfn.local.supervision import read_status
from mfn.errors import MfnError
from mfn.packaging import build_spec
from mfn.runtime.bundle import load_in_process
from mfn.servers.process import descendants

ROOT = Path(__file__).resolve().parent.parent
MLP = f"{ROOT / 'examples/mlp/handler.py'}:MLP"
DISTINCT_INPUTS = 256
NOTE = (
    "Reloads can be fewer than worker kills on Triton: after a reload, the replaced model version never finishes\n"
    "unloading (Triton waits for its dead stub), so its other stubs linger without serving; a kill that hits one\n"
    "of those needs no reload. TorchServe restarts its own workers, so mfn records no reloads there."
)
WORKER_MARKERS = {"triton": "triton_python_backend_stub", "torchserve": "model_service_worker"}


@dataclass
class SoakResult:
    server: str
    duration_s: float
    concurrency: int
    sent: int = 0
    failed: int = 0
    wrong: int = 0
    worker_kills: int = 0
    server_kills: int = 0
    restarts: int = 0
    reloads: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    failures: list[str] = field(default_factory=list)


def expected_outputs(rows: np.ndarray) -> dict[str, np.ndarray]:
    """The handler's own answers, one row at a time as the soak sends them."""
    cls, handler_file, spec = build_spec(MLP)
    loaded = load_in_process(cls, spec, handler_file)
    try:
        answers = loaded.loop.run([{"features": rows[index:index + 1]} for index in range(len(rows))])
    finally:
        loaded.close()
    return {name: np.concatenate([answer[name] for answer in answers]) for name in answers[0]}


def kill_a_worker(deployment, server: str) -> bool:
    server_pid = read_status(deployment).server_pid
    if not server_pid:
        return False
    workers = [pid for pid, command in descendants(server_pid).items() if WORKER_MARKERS[server] in " ".join(command)]
    if not workers:
        return False
    os.kill(workers[0], signal.SIGKILL)
    return True


def _kill_on_schedule(deployment, server: str, result: SoakResult, duration_s: float, kill_every_s: float, deadline: float) -> None:  # noqa: PLR0913
    """Kill a worker every `kill_every_s` and the server once half-way, until `deadline`."""
    started = time.monotonic()
    next_kill = started + kill_every_s
    server_killed = False
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = time.monotonic()
        if not server_killed and now - started >= duration_s / 2:
            server_pid = read_status(deployment).server_pid
            if server_pid:
                os.kill(server_pid, signal.SIGKILL)
                result.server_kills += 1
                server_killed = True
        elif now >= next_kill:
            result.worker_kills += kill_a_worker(deployment, server)
            next_kill = now + kill_every_s


def soak(server: str, duration_s: float, concurrency: int, kill_every_s: float, workdir: Path) -> SoakResult:
    rng = np.random.default_rng(7)
    inputs = rng.standard_normal((DISTINCT_INPUTS, 4)).astype(np.float32)
    expected = expected_outputs(inputs)
    store = workdir / server
    mfn.package(MLP, store, server=server)
    name = f"soak-{server}"
    deployment = deployments.deploy(store, name=name)
    result = SoakResult(server, duration_s, concurrency)
    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.monotonic() + duration_s

    def load(thread: int) -> None:
        index = thread
        with mfn.Client(name, timeout_s=30.0) as client:
            while time.monotonic() < deadline:
                index = (index + concurrency) % DISTINCT_INPUTS
                started = time.perf_counter()
                try:
                    outputs = client.infer("mlp", {"features": inputs[index:index + 1]})
                except Exception as error:  # noqa: BLE001 - anything but an answer is a failure to report
                    message = str(error).splitlines()[0] if isinstance(error, MfnError) else repr(error)
                    with lock:
                        result.sent += 1
                        result.failed += 1
                        result.failures.append(message)
                    continue
                elapsed = time.perf_counter() - started
                right = np.allclose(outputs["probs"], expected["probs"][index:index + 1], rtol=1e-4, atol=1e-5) and (
                    outputs["label"].ravel().tolist() == expected["label"][index:index + 1].ravel().tolist()
                )
                with lock:
                    result.sent += 1
                    latencies.append(elapsed)
                    result.wrong += 0 if right else 1

    threads = [threading.Thread(target=load, args=(thread,)) for thread in range(concurrency)]
    try:
        for thread in threads:
            thread.start()
        _kill_on_schedule(deployment, server, result, duration_s, kill_every_s, deadline)
        for thread in threads:
            thread.join()
        status = read_status(deployment)
        result.restarts = status.restarts
        result.reloads = sum(model.reloads for model in status.models.values())
    finally:
        deployments.undeploy(name)
    latencies.sort()
    if latencies:
        result.p50_ms = statistics.median(latencies) * 1000
        result.p99_ms = latencies[int(len(latencies) * 0.99)] * 1000
        result.max_ms = latencies[-1] * 1000
    result.failures = sorted(set(result.failures))[:20]
    return result


def render(results: list[SoakResult], command: str) -> str:
    lines = [
        "# RELIABILITY",
        "",
        "Soak results from `make soak`: one-row requests of the MLP example through `mfn.Client` (default retries),",
        "a model worker killed every minute and the server killed once half-way; every answer is compared with",
        "the handler run in-process.",
        "",
        f"Command: `{command}` (`make soak`), run on {time.strftime('%Y-%m-%d')} on {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}.",
        "",
        "| server | duration | concurrency | sent | failed | wrong | worker kills | server kills | reloads | restarts | p50 ms | p99 ms | max ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.server} | {r.duration_s:.0f} s | {r.concurrency} | {r.sent:,} | {r.failed} | {r.wrong} | {r.worker_kills} | "
            f"{r.server_kills} | {r.reloads} | {r.restarts} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | {r.max_ms:.0f} |"
        )
    lines += ["", NOTE]
    failures = [f"- {r.server}: {message}" for r in results for message in r.failures]
    if failures:
        lines += ["", "Failures seen (distinct messages):", "", *failures]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", default="triton,torchserve")
    parser.add_argument("--duration-s", type=float, default=600.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--kill-worker-every-s", type=float, default=60.0)
    parser.add_argument("--output", type=Path, default=ROOT / "RELIABILITY.md")
    args = parser.parse_args()
    os.environ.setdefault("MFN_HOME", tempfile.mkdtemp(prefix="mfn-soak-"))
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for server in args.servers.split(","):
            print(f"soaking {server} for {args.duration_s:.0f} s ...", file=sys.stderr, flush=True)
            result = soak(server, args.duration_s, args.concurrency, args.kill_worker_every_s, Path(scratch))
            print(json.dumps({k: v for k, v in asdict(result).items() if k != "failures"}), file=sys.stderr, flush=True)
            results.append(result)
    (ROOT / "benchmarks" / "results").mkdir(exist_ok=True)
    (ROOT / "benchmarks" / "results" / "soak.json").write_text(json.dumps([asdict(r) for r in results], indent=2))
    command = "python benchmarks/soak.py " + " ".join(sys.argv[1:])
    args.output.write_text(render(results, command.strip()))
    return 0 if all(r.failed == 0 and r.wrong == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
