"""Where a Triton request's CPU goes: per request, in the model's stub, in tritonserver and in k6, for mfn's
model.py and the hand-written one (and variants of mfn's that leave one part out), alternated under k6 load.

On two shared cores every process's CPU per request costs throughput, so this splits the mfn/hand gap of
`benchmarks/run.py` by process. Variants of mfn's model.py (a copy with one part removed) say what each part
costs in the real stub, where Python runs several times slower than the same code warm in-process
(benchmarks/adapter_overhead.py):
  nometrics  the batch loop's metric records made no-ops
  noloop     decoded requests go straight to the handler's predict (no checks, metrics or isolation)
  nogc       Python's cyclic garbage collector off in the stub
and `--spin-us N` adds a hand-written model that busy-waits N microseconds per execute(): the throughput that
N extra microseconds of stub CPU cost.

Run: `python benchmarks/stub_cpu.py [--model text_stats] [--protocol grpc] [--variants nometrics,noloop] [--spin-us 30]`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench  # noqa: E402

import mfn  # noqa: E402
from mfn.local import deployments  # noqa: E402

PATCHES = {
    "nometrics": [("        self.answer = self.model.answer\n",
                   "        self.answer = self.model.answer\n        self.model.loop.metrics.batch = lambda *a: None\n"
                   "        self.model.loop.metrics.requests = lambda *a: None\n")],
    "noloop": [("            outcomes = self.answer([self._decode(request) for request in requests])\n",
                "            outcomes = [self.model.handler.predict(self._decode(request)) for request in requests]\n")],
    "nogc": [("        started = time.perf_counter()\n", "        started = time.perf_counter()\n        import gc\n        gc.disable()\n")],
}
TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) * TICK_S


def pids(matches) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and matches((proc / "cmdline").read_bytes().split(b"\0")):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def copy_variant(repo: Path, source: str, name: str, replacements: list[tuple[str, str]]) -> None:
    shutil.copytree(repo / source, repo / name)
    config = repo / name / "config.pbtxt"
    config.write_text(config.read_text().replace(f'name: "{source}"', f'name: "{name}"'))
    model = repo / name / "1" / "model.py"
    text = model.read_text()
    for old, new in replacements:
        if old not in text:
            raise SystemExit(f"{name}: model.py has changed; update PATCHES ({old.strip()!r} not found)")
        text = text.replace(old, new)
    model.write_text(text)


def prepare(repo: Path, model: str, batching: bool, variants: list[str], spin_us: float) -> dict[str, str]:
    ref, _ = bench.MODELS[model]
    names = {impl: bench.variant(model, impl, batching) for impl in ("mfn", "hand")}
    mfn.package(ref, repo, name=names["mfn"], **({} if batching else {"batching": bench.NO_BATCHING}))
    bench.handwritten_triton(repo, names["mfn"], names["hand"], model)
    for variant in variants:
        names[variant] = names["mfn"].replace("mfn", variant)
        copy_variant(repo, names["mfn"], names[variant], PATCHES[variant])
    if spin_us:
        names["spin"] = names["hand"].replace("hand", "spin")
        spin = (f"    def execute(self, requests):\n        import time as spin_clock\n"
                f"        spin_end = spin_clock.perf_counter() + {spin_us / 1e6!r}\n"
                f"        while spin_clock.perf_counter() < spin_end:\n            pass\n")
        copy_variant(repo, names["hand"], names["spin"], [("    def execute(self, requests):\n", spin)])
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="text_stats", choices=sorted(bench.MODELS))
    parser.add_argument("--protocol", default="grpc", choices=["grpc", "http"])
    parser.add_argument("--batching", action="store_true", help="Dynamic batching on (default: off).")
    parser.add_argument("--seconds", type=float, default=6.0, help="Per round and side.")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--variants", default="", help=f"Comma-separated: {', '.join(PATCHES)}.")
    parser.add_argument("--spin-us", type=float, default=0.0)
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mfn-stub-cpu-"))
    names = prepare(work / "triton", options.model, options.batching, list(filter(None, options.variants.split(","))),
                    options.spin_us)
    deployment = deployments.deploy(work / "triton", name="stub-cpu", verify=False)
    try:
        protosets = {"triton": bench.triton_protoset(work)}
        (server,) = pids(lambda command: command[0].endswith(b"tritonserver"))
        stubs = {impl: pids(lambda command, n=name.encode(): b"triton_python_backend_stub" in command[0]
                            and any(n in part for part in command))[0] for impl, name in names.items()}
        envs = {impl: bench.k6_env(deployment, "triton", name, options.model, options.protocol, protosets, work)
                for impl, name in names.items()}
        for env in envs.values():
            bench.k6(env, 4, 1.0, work)  # warm-up
        print(f"{options.model}, Triton {options.protocol}, batching {'on' if options.batching else 'off'}, "
              f"concurrency {options.concurrency}: CPU us per request")
        for round_index in range(options.rounds):
            for impl in list(names) if round_index % 2 == 0 else list(names)[::-1]:
                before, clock = (cpu_s(stubs[impl]), cpu_s(server)), os.times()
                metrics = bench.k6(envs[impl], options.concurrency, options.seconds, work)
                after, ended = (cpu_s(stubs[impl]), cpu_s(server)), os.times()
                count = metrics["iterations"]["count"]
                k6_s = ended.children_user + ended.children_system - clock.children_user - clock.children_system
                stub, served = (1e6 * (b - a) / count for a, b in zip(before, after))
                print(f"  {impl:10} {metrics['iterations']['rate']:7.0f} req/s  stub {stub:6.1f}  tritonserver "
                      f"{served:6.1f}  k6 {1e6 * k6_s / count:6.1f}", flush=True)
    finally:
        deployments.undeploy(deployment.name)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
