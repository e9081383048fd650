"""mfn.Client's one retry policy: which failures are not the request's own fault, and how long to wait."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from mfn.errors import CallError, NoAnswer

RETRY_BACKOFF_S = 0.5  # doubled after each attempt
# Answers that mean the model's worker was (re)starting, as (statuses, the server's own words at the start of
# its message): TorchServe 0.12 answers 503 (gRPC INTERNAL) "Model ... has no worker to serve inference
# request" while no worker is up, and "Worker died." to the requests a dying worker held: 500 (gRPC INTERNAL;
# 507 in older releases), or 413 (gRPC RESOURCE_EXHAUSTED) when the worker was killed (exit 137, which
# TorchServe takes for running out of memory). Triton answers 500 (gRPC INTERNAL) "Stub process '<instance>'
# is not healthy." before it sends a request to a Python stub that died; mfn's supervisor swaps in a new one.
# Matching at the start keeps a handler's own message ("predict failed: ... is not healthy") from counting.
RESTARTING = (
    (("503", "INTERNAL"), re.compile(r"Model \S+ has no worker to serve inference request")),
    (("500", "507", "413", "INTERNAL", "RESOURCE_EXHAUSTED"), re.compile(r"Worker died\.")),
    (("500", "INTERNAL"), re.compile(r"Stub process '[^']*' is not healthy\.")),
)
# Triton's answer for a version it does not serve (not loaded, or unloaded since): gRPC UNAVAILABLE, HTTP 503, though
# asking again changes nothing.
VERSION_NOT_READY = re.compile(r"version \d+ is not at ready state")
# How each server refuses a missing or stale key: TorchServe 401 / UNAUTHENTICATED, Triton 403 / UNAVAILABLE.
AUTH_REFUSED = ("401", "403", "UNAUTHENTICATED", "PERMISSION_DENIED")
# "HTTP 503: " or "gRPC INTERNAL: ": how CallError messages begin.
_STATUS_PREFIX = re.compile(r"^(?:HTTP|gRPC) \S+: ")
T = TypeVar("T")


def auth_refused(error: CallError) -> bool:
    """Whether the server refused the call's key (missing or stale): TorchServe 401 / UNAUTHENTICATED (and 400
    "Token Authorization failed" from 0.12's REST API for a key of an earlier server start), Triton 403 over
    HTTP and UNAVAILABLE "This protocol is restricted" over gRPC."""
    message = str(error)
    return (error.status in AUTH_REFUSED
            or (error.status == "400" and "Token Authorization failed" in message)
            or (error.status == "UNAVAILABLE" and "is restricted, expecting header" in message))


def retryable(error: CallError) -> bool:
    """Repeat a call only when it cannot have been the request's own fault.

    That is a connection that failed or broke, a worker that was restarting, or no answer in time:
    TorchServe loses a request its worker held when the worker dies, and holds new ones until a new
    worker is up, so a timeout is how a restart often shows. A model slower than the timeout is
    therefore tried `retries` + 1 times. Refusals (4xx) and handler errors are never repeated.
    """
    if error.status in (NoAnswer.CONNECTION, NoAnswer.TIMEOUT, "DEADLINE_EXCEEDED"):
        return True
    if error.status == "UNAVAILABLE":
        # gRPC's code for a failed connection; TorchServe also answers a handler's exception with it, and
        # Triton a request without the key a restricted protocol wants, or for a version it does not serve.
        return ("Prediction failed" not in str(error) and not auth_refused(error)
                and not VERSION_NOT_READY.search(str(error)))
    server_words = _STATUS_PREFIX.sub("", str(error), count=1)
    return any(error.status in statuses and phrase.match(server_words) for statuses, phrase in RESTARTING)


@dataclass(frozen=True)
class RetryPolicy:
    """`retries` extra attempts, `backoff_s` apart and doubling, for failures `retryable` accepts; a refused key
    is read again once."""

    retries: int = 4
    backoff_s: float = RETRY_BACKOFF_S

    def run(
        self,
        call: Callable[[], T],
        refresh_key: Callable[[], bool],
        after_failure: Callable[[CallError], None],
        describe: Callable[[CallError, int], str],
    ) -> T:
        """Run `call` until it succeeds or may not be repeated.

        Args:
            refresh_key: Reads the key again after a refusal; False when there is none to read.
            after_failure: Told of each failure that will be retried (to drop a broken connection, say).
            describe: The final error's message, given the failure and the number of attempts.

        Raises:
            InvokeError: with `describe`'s message.
        """
        from mfn.errors import InvokeError

        key_refreshed = False
        attempt = 0
        while True:
            try:
                return call()
            except CallError as error:
                if auth_refused(error) and not key_refreshed and refresh_key():
                    key_refreshed = True
                    continue
                if attempt == self.retries or not retryable(error):
                    raise InvokeError(describe(error, attempt + 1)) from None
                after_failure(error)
                time.sleep(self.backoff_s * 2**attempt)
                attempt += 1
