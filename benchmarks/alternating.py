"""One request at a time through two paths to the same model, in alternating rounds: what one path adds.

Used by idle_front.py (the idle front) and rollout_proxy.py (the rollout proxy), each against the server's own port.
"""

from __future__ import annotations

import statistics
import time

import mfn

ROUNDS = 10
WARM_CALLS = 50


def per_call_s(client: mfn.Client, model: str, inputs: dict, calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        client.infer(model, inputs)
    return (time.perf_counter() - started) / calls


def added_cost(path: str, through: mfn.Client, direct: mfn.Client, model: str, inputs: dict, calls: int) -> dict[str, float]:  # noqa: PLR0913
    """Median µs per call through `path` and direct, over ROUNDS alternating rounds of calls // ROUNDS each."""
    for client in (through, direct):
        per_call_s(client, model, inputs, WARM_CALLS)  # connections made, caches warm
    rounds: dict[str, list[float]] = {path: [], "direct": []}
    for _ in range(ROUNDS):
        rounds[path].append(per_call_s(through, model, inputs, calls // ROUNDS))
        rounds["direct"].append(per_call_s(direct, model, inputs, calls // ROUNDS))
    through_s, direct_s = statistics.median(rounds[path]), statistics.median(rounds["direct"])
    return {f"{path}_us": round(through_s * 1e6, 1), "direct_us": round(direct_s * 1e6, 1),
            "added_us": round((through_s - direct_s) * 1e6, 1)}
