"""Create weights.pt for the wide MLP (512 → 2048 → 2048 → 2048 → 10, about 9.4M parameters), seeded."""

import sys
from pathlib import Path

import torch


def main(destination: Path) -> None:
    torch.manual_seed(7)
    layers = [torch.nn.Linear(512, 2048), torch.nn.ReLU(), torch.nn.Linear(2048, 2048), torch.nn.ReLU(),
              torch.nn.Linear(2048, 2048), torch.nn.ReLU(), torch.nn.Linear(2048, 10)]
    torch.jit.script(torch.nn.Sequential(*layers).eval()).save(str(destination))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("weights.pt"))
