"""Waiting for a TorchServe to finish the requests it has accepted, read from its metrics.

Two ways: by accounts (`wait_until_answered`: every request received has been answered; local deployments), and
by quiet (`wait_until_quiet`, below; the chart's preStop hook still waits this way).

TorchServe 0.12 has no drain setting: on SIGTERM it closes every connection at once, failing what is in
flight ("Worker died"). So whoever stops it first waits until it has been quiet (no inference request
received or answered) for a moment. Quiet is read from its Prometheus counters:
`ts_inference_requests_total` moves when a request arrives (REST or gRPC), `ts_inference_latency_microseconds`
when one is answered.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from mfn.runtime.cache import CACHE_REQUESTS
from mfn.runtime.metric_batching import FLUSH_INTERVAL_S
from mfn.runtime.metrics import IN_FLIGHT_SECONDS, REQUESTS
from mfn.servers.http import request

ACTIVITY_METRICS = ("ts_inference_requests_total", "ts_inference_latency_microseconds")
PREDICT_BUCKETS = "mfn_predict_duration_seconds_bucket"
POLL_S = 0.5
# As the page may expose the counter: with its "_total" or, as TorchServe's frontend re-exposes a worker's, without.
IN_FLIGHT_SECONDS_NAMES = (IN_FLIGHT_SECONDS, IN_FLIGHT_SECONDS.removesuffix("_total"))
_LOGGER = logging.getLogger(__name__)


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


def slowest_predict_s(metrics_text: str) -> float:
    """An upper bound on the slowest predict call so far, from mfn's predict-time histogram (0 if none).

    A request whose predict runs longer than the quiet window moves no counter meanwhile, so the window
    must outlast the slowest predict the model has shown.
    """
    cumulative: dict[float, float] = {}
    for line in metrics_text.splitlines():
        if line.startswith(PREDICT_BUCKETS + "{"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            upper = float("inf") if bound == "+Inf" else float(bound)
            cumulative[upper] = cumulative.get(upper, 0.0) + _sample_value(line)
    if not cumulative:
        return 0.0
    total = cumulative[max(cumulative)]
    finite = sorted(upper for upper in cumulative if upper != float("inf"))
    reached = [upper for upper in finite if cumulative[upper] >= total]
    return reached[0] if reached else (finite[-1] * 2 if finite else 0.0)


def quiet_window_s(port: int, minimum_s: float) -> float:
    """How long TorchServe at `port` must stay quiet before nothing can be in flight: the minimum, or longer
    when the model has shown slower predict calls."""
    status, text = request("GET", f"http://127.0.0.1:{port}/metrics", timeout_s=2.0)
    return max(minimum_s, slowest_predict_s(text) + minimum_s) if status == 200 else minimum_s


# Counted by TorchServe's frontend when it accepts an inference request (REST or gRPC), before any worker has it.
_RECEIVED = "ts_inference_requests_total"
# mfn counts a request once the model has run, a moment before the worker hands its answer to the frontend, and
# its counts reach the metrics port a flush interval late or more under load (mfn.runtime.metric_batching, then
# the frontend reads them from the worker's log): late makes the drain wait longer, never shorter, and the
# accounts must still read the same this much later to cover that moment.
_BALANCE_HOLD_S = 0.5
# Requests TorchServe accepts and then fails itself (a worker that died under them, a full job queue, a response
# timeout) never reach mfn's count of answers, so the accounts stay short of balance for good. They are told from
# requests still being served by a standstill: nothing received, answered or in a model's hands for this long,
# three of mfn's metric flushes (a request in a model's hands adds to mfn_inflight_request_seconds_total at each).
_STANDSTILL_S = 3 * FLUSH_INTERVAL_S


@dataclass(frozen=True)
class Accounts:
    received: float
    answered: float
    in_model_seconds: float  # mfn_inflight_request_seconds_total: grows while any request is in a model's hands

    @property
    def unanswered(self) -> float:
        return self.received - self.answered


def wait_until_answered(metrics_url: str, exited: Callable[[], object], timeout_s: float) -> float:
    """Poll until every request received has been answered, or the server has exited (`exited`: its process's
    poll, None while it runs); 0 then, or how many were still unanswered when `timeout_s` ran out.

    Balanced means two readings `_BALANCE_HOLD_S` apart show the same accounts with nothing unanswered. Short of
    balance but at a standstill for `_STANDSTILL_S` (see there) also ends the wait: what is missing are requests
    TorchServe failed itself, and they are logged. A reading that fails while the server runs (a scrape timing out
    under load) tells nothing, so it is waited past rather than taken for an idle server.
    """
    deadline = time.monotonic() + timeout_s
    previous: Accounts | None = None
    unchanged_since = time.monotonic()
    while exited() is None:
        accounts = read_accounts(metrics_url)
        now = time.monotonic()
        if accounts is None or accounts != previous:
            unchanged_since = now
        elif accounts.unanswered <= 0:
            return 0.0
        elif now - unchanged_since >= _STANDSTILL_S:
            _LOGGER.info("%d accepted requests were failed by TorchServe itself (a worker that died, a full queue or a "
                         "response timeout) and will not be answered; nothing else is in flight", accounts.unanswered)
            return 0.0
        if now + _BALANCE_HOLD_S > deadline:
            return max(accounts.unanswered if accounts is not None else 0.0, 0.0)
        previous = accounts
        time.sleep(_BALANCE_HOLD_S)
    return 0.0


def read_accounts(metrics_url: str) -> Accounts | None:
    """Inference requests received and answered so far, from the server's metrics; None when it did not answer.

    TorchServe 0.12 counts no answers to inference requests (Requests2XX/4XX/5XX count every HTTP response on
    every port, scrapes of this endpoint included, and no gRPC answer), so the answered side is mfn's: what its
    handlers ran (`mfn_requests_total`, every outcome) and what their response cache answered (hits).
    """
    from mfn.prometheus_text import samples

    status, text = request("GET", metrics_url, timeout_s=2.0)
    if status != 200:
        return None
    received = answered = in_model_seconds = 0.0
    for sample in samples(text):
        if sample.name == _RECEIVED:
            received += sample.value
        elif sample.name == REQUESTS or (sample.name == CACHE_REQUESTS and sample.labels.get("result") == "hit"):
            answered += sample.value
        elif sample.name in IN_FLIGHT_SECONDS_NAMES:
            in_model_seconds += sample.value
    return Accounts(received, answered, in_model_seconds)
