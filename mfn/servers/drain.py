"""Waiting for a TorchServe to answer every request it has accepted, by its accounts read from its metrics:
local deployments (mfn.servers.torchserve.admin.drain) and the chart's preStop hook (mfn.kubernetes.drain).

TorchServe 0.12 has no drain setting: on SIGTERM it closes every connection at once, failing what is in
flight ("Worker died"). So whoever stops it first waits until every request it received has been answered.
Waiting for a quiet moment instead cannot tell a predict longer than any before from an idle server.
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

# As the page may expose the counter: with its "_total" or, as TorchServe's frontend re-exposes a worker's, without.
IN_FLIGHT_SECONDS_NAMES = (IN_FLIGHT_SECONDS, IN_FLIGHT_SECONDS.removesuffix("_total"))
_LOGGER = logging.getLogger(__name__)
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
