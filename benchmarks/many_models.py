"""Many small functions in one deployment: deploy time, time until every model has answered, and memory.

N tiny numpy handlers (one per generated file, `f_000` ... ) are packaged into one repository or store, deployed
with `mfn deploy`, and each is sent one request. Memory is the resident set of the server's whole process group
(server, Triton stubs or TorchServe workers), read from /proc once every model has answered.

Run: `python benchmarks/many_models.py [--counts 1 10 50] [--servers triton torchserve]`;
results in benchmarks/results/many_models.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import mfn
from mfn.local import deployments
from mfn.local.supervision import read_status

ROOT = Path(__file__).resolve().parent.parent
HANDLER = '''import numpy as np

import mfn


@mfn.function(name="{name}", inputs=[mfn.Tensor("x", "FP32", [4])], outputs=[mfn.Tensor("y", "FP32", [4])])
def {name}(inputs):
    return {{"y": inputs["x"] * 2}}
'''


def group_rss_mb(leader: int) -> float:
    """Resident memory of every process in `leader`'s process group, in MiB."""
    total_kb = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) != leader:
                continue
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        except (OSError, ProcessLookupError, ValueError):
            continue
    return total_kb / 1024


def one(server: str, count: int, scratch: Path) -> dict:
    handlers, output = scratch / f"handlers-{count}", scratch / f"{server}-{count}"
    handlers.mkdir(exist_ok=True)
    names = [f"f_{index:03d}" for index in range(count)]
    started = time.monotonic()
    for name in names:
        (handlers / f"{name}.py").write_text(HANDLER.format(name=name))
        mfn.package(f"{handlers / name}.py:{name}", output, server=server)
    package_s = time.monotonic() - started
    started = time.monotonic()
    deployment = deployments.deploy(output, name=f"many-{server}", verify=False)
    deploy_s = time.monotonic() - started
    try:
        with mfn.Client(deployment.name) as client:
            for name in names:
                client.infer(name, {"x": [[1, 2, 3, 4]]})
        answered_s = time.monotonic() - started
        memory_mb = group_rss_mb(read_status(deployment).server_pid)
    finally:
        deployments.undeploy(deployment.name)
    return {"server": server, "models": count, "package_s": round(package_s, 2), "deploy_s": round(deploy_s, 2),
            "all_answered_s": round(answered_s, 2), "memory_mb": round(memory_mb), "per_model_mb": round(memory_mb / count)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--servers", nargs="+", default=["triton", "torchserve"])
    options = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="mfn-many-") as scratch:
        for server in options.servers:
            for count in options.counts:
                rows.append(one(server, count, Path(scratch)))
                print(json.dumps(rows[-1]), flush=True)
    output = ROOT / "benchmarks" / "results" / "many_models.json"
    output.write_text(json.dumps({"command": " ".join(["python", "benchmarks/many_models.py", *sys.argv[1:]]),
                                  "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
