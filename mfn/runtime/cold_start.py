"""Where a model's load time goes, as each server adapter measures it in its own process.

The supervisor sets MFN_COLD_START_DIR before it starts the server; every model process (a Triton stub, a
TorchServe worker) writes one file there once its model is ready, with the seconds it spent in each phase:

- adapter_s: importing mfn and the adapter's own work around the handler (reading the spec, the codec, ...);
- handler_import_s: importing the handler's module (and whatever it imports: torch, TensorFlow, ...);
- setup_s: the handler's `setup()`;
- warm_up_s: the spec's warm-up requests.

The server's own share (starting the model process, its interpreter and libraries) is what the supervisor's
load call took beyond these (see mfn.local.supervisor).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from mfn.files import write_json

ENV = "MFN_COLD_START_DIR"
PHASES = ("adapter_s", "handler_import_s", "setup_s", "warm_up_s")


def record(model: str, version: int, phases: dict[str, float]) -> None:
    """Write this process's phases for `model` where the supervisor reads them; nothing when not asked to."""
    directory = os.environ.get(ENV)
    if not directory:
        return
    write_json(Path(directory) / f"{model}-{version}-{os.getpid()}.json",
               {"model": model, "version": version, **{name: round(phases.get(name, 0.0), 4) for name in PHASES}}, indent=None)


def with_adapter_share(timings: dict[str, float], total_s: float) -> dict[str, float]:
    """The phases of one load, given what mfn's import and the adapter's initialize took in all (`total_s`):
    the adapter's share is what the handler's import, setup and warm-up did not take."""
    return {**timings, "adapter_s": max(0.0, total_s - sum(timings.values()))}


def read(directory: Path, model: str) -> dict[str, float]:
    """The phases of `model`'s slowest model process (the one the model waited for), or {} when none wrote."""
    slowest: dict[str, float] = {}
    for path in directory.glob(f"{model}-*.json"):
        try:
            phases = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if phases.get("model") != model:
            continue
        total = sum(phases.get(name, 0.0) for name in PHASES)
        if total >= sum(slowest.values()):
            slowest = {name: float(phases.get(name, 0.0)) for name in PHASES}
    return slowest


def split(load_s: float, phases: dict[str, float]) -> dict[str, float]:
    """One model's load as the supervisor saw it (`load_s`), split: the adapter's phases, and server_s, the rest
    (the server starting the model process, its interpreter and libraries)."""
    return {"load_s": round(load_s, 3), **phases, "server_s": round(max(0.0, load_s - sum(phases.values())), 3)}


def describe(split_phases: dict[str, float]) -> str:
    """`2.1 s: server 1.2, mfn 0.3, handler import 0.5, setup 0.1, warm-up 0.0` for a progress line."""
    names = {"server_s": "server", "adapter_s": "mfn", "handler_import_s": "handler import", "setup_s": "setup",
             "warm_up_s": "warm-up"}
    parts = [f"{label} {split_phases[name]:.2f}" for name, label in names.items() if name in split_phases]
    return f"{split_phases['load_s']:.1f} s: " + ", ".join(parts) if len(parts) > 1 else f"{split_phases['load_s']:.1f} s"
