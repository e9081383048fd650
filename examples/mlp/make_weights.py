"""Create weights.pt, the MLP's TorchScript weights, deterministically (fixed seed, no download)."""

import sys
from pathlib import Path

import torch


def build_model() -> torch.nn.Module:
    torch.manual_seed(20261122)
    return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)).eval()


def main(destination: Path) -> None:
    torch.jit.script(build_model()).save(str(destination))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("weights.pt"))
