"""What the supply-chain checks cost: packaging (wheel, pins, manifest), `--bundle-env`, digest checks, signing.

A TorchScript model with about 128 MiB of weights, packaged for Triton and TorchServe; each step timed
`--rounds` times, median and spread reported. Deploy-time checks hash every file of a package, so their cost
grows with the package: this shows how fast.

    python benchmarks/package_checks.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import mfn
from mfn import signing

ROOT = Path(__file__).resolve().parents[1]
WIDTH = 4096


def model_file(directory: Path) -> Path:
    import torch

    module = torch.nn.Sequential(torch.nn.Linear(WIDTH, WIDTH), torch.nn.ReLU(), torch.nn.Linear(WIDTH, WIDTH)).eval()
    path = directory / "wide.pt"
    torch.jit.save(torch.jit.script(module), str(path))
    return path


def key_pair(directory: Path) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    private, public = directory / "key.pem", directory / "key.pub.pem"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


def timed(step: Callable[[int], object], rounds: int) -> list[float]:
    seconds = []
    for index in range(rounds):
        started = time.perf_counter()
        step(index)
        seconds.append(time.perf_counter() - started)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="mfn-checks-") as scratch:
        work = Path(scratch)
        model = model_file(work)
        private, public = key_pair(work)
        inputs = [mfn.Tensor("x", "FP32", [WIDTH])]
        size_mb = model.stat().st_size / 2**20
        for target in ("triton", "torchserve"):
            def package(index: int, bundle: bool = False, target: str = target) -> object:
                return mfn.package(str(model), work / f"{target}-{'bundle' if bundle else 'plain'}-{index}", server=target,
                                   inputs=inputs, bundle_env=bundle)

            out = work / f"{target}-plain-0"
            steps = {
                "package": package,
                "package --bundle-env": lambda index: package(index, bundle=True),
                "verify (digests)": lambda index: signing.verify(out),
                "sign": lambda index: signing.sign(out, private),
                "verify --key (digests + signature)": lambda index: signing.verify(out, public),
            }
            for step, run in steps.items():
                seconds = timed(run, args.rounds)
                rows.append((target, step, statistics.median(seconds), min(seconds), max(seconds)))
                print(f"{target:10} {step:36} median {statistics.median(seconds):6.3f} s", file=sys.stderr, flush=True)
    print(f"Model: TorchScript, {size_mb:.0f} MiB of weights; {args.rounds} rounds per step.\n")
    print("| server | step | median s | min s | max s |")
    print("|---|---|---|---|---|")
    for target, step, median, low, high in rows:
        print(f"| {target} | {step} | {median:.3f} | {low:.3f} | {high:.3f} |")


if __name__ == "__main__":
    main()
