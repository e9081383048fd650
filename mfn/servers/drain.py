"""Waiting for a TorchServe to finish the requests it has accepted, read from its metrics.

TorchServe 0.12 has no drain setting: on SIGTERM it closes every connection at once, failing what is in
flight ("Worker died"). So whoever stops it first waits until it has been quiet (no inference request
received or answered) for a moment. Quiet is read from its Prometheus counters:
`ts_inference_requests_total` moves when a request arrives (REST or gRPC), `ts_inference_latency_microseconds`
when one is answered.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from mfn.servers.http import request

ACTIVITY_METRICS = ("ts_inference_requests_total", "ts_inference_latency_microseconds")
POLL_S = 0.5


def activity(metrics_text: str) -> tuple[float, ...]:
    """The sum of each activity counter over all its label sets, from Prometheus text."""
    totals = dict.fromkeys(ACTIVITY_METRICS, 0.0)
    for line in metrics_text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in totals:
            totals[name] += _sample_value(line)
    return tuple(totals.values())


def _sample_value(line: str) -> float:
    # The value comes after the name or its labels; a timestamp may follow it.
    after_name = line[line.rfind("}") + 1 :] if "}" in line else line.split(None, 1)[1]
    return float(after_name.split()[0])


def wait_until_quiet(
    read: Callable[[], tuple[float, ...] | None],
    timeout_s: float,
    quiet_s: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Poll `read` until its value has not changed for `quiet_s`; False when `timeout_s` ran out first.

    `read` returning None means the server no longer answers: nothing is left to wait for.
    """
    deadline = clock() + timeout_s
    last = read()
    quiet_since = clock()
    while last is not None and clock() - quiet_since < quiet_s:
        if clock() >= deadline:
            return False
        sleep(POLL_S)
        current = read()
        if current != last:
            last, quiet_since = current, clock()
    return True


def metrics_reader(port: int) -> Callable[[], tuple[float, ...] | None]:
    """Reads the activity counters from TorchServe's metrics port on 127.0.0.1."""

    def read() -> tuple[float, ...] | None:
        status, text = request("GET", f"http://127.0.0.1:{port}/metrics", timeout_s=2.0)
        return activity(text) if status == 200 else None

    return read
