"""mfn's built-in handler metrics, recorded by the batch loop under one set of names on every server."""

from __future__ import annotations

import threading
import time

from mfn.handlers.metrics import LATENCY_BUCKETS_S, MODEL_LABELS, MetricFactory
from mfn.runtime.metric_batching import frozen_labels

REQUESTS = "mfn_requests_total"
BATCH_SIZE = "mfn_batch_size"
PREDICT_SECONDS = "mfn_predict_duration_seconds"
ISOLATION_PREDICTS = "mfn_isolation_predicts_total"
FIRST_CHUNK_SECONDS = "mfn_first_chunk_seconds"
STREAM_CHUNKS = "mfn_stream_chunks"
IN_FLIGHT = "mfn_inflight_requests"
IN_FLIGHT_SECONDS = "mfn_inflight_request_seconds_total"

# Rows per predict call: powers of two up to the largest batch sizes people configure.
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
OUTCOMES = ("success", "invalid", "error")
STREAMING_OUTCOMES = (*OUTCOMES, "cancelled")
# Chunks per streamed request: one to a few thousand (tokens of a long generation).
CHUNK_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class InFlight:
    """Requests in the model's hands now, and the time integral of that count (request-seconds).

    The gauge is what a scrape sees at one instant; the integral's rate over a window is the window's average
    concurrency exactly (Little's law), which is what autoscaling should follow, however short each request is.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0
        self._since = time.perf_counter()
        self._seconds = 0.0
        self._reported_seconds = 0.0

    def add(self, delta: int) -> None:
        """`delta` requests came into (positive) or left (negative) the model's hands."""
        with self._lock:
            now = time.perf_counter()
            self._seconds += self.count * (now - self._since)
            self._since = now
            self.count += delta

    def sample(self) -> tuple[int, float]:
        """The count now and the request-seconds accumulated since the previous sample."""
        with self._lock:
            now = time.perf_counter()
            self._seconds += self.count * (now - self._since)
            self._since = now
            delta, self._reported_seconds = self._seconds - self._reported_seconds, self._seconds
            return self.count, delta


class LoopMetrics:
    """mfn's built-in metrics, recorded by the batch loop."""

    def __init__(self, factory: MetricFactory, model: str, version: int, streaming: bool = False) -> None:
        self._labels = frozen_labels({"model": model, "version": str(version)})
        outcomes = STREAMING_OUTCOMES if streaming else OUTCOMES
        self._outcome_labels = {outcome: frozen_labels({**self._labels, "outcome": outcome}) for outcome in outcomes}
        self._requests = factory.counter(REQUESTS, "Requests the model answered (response cache hits aside), by outcome.",
                                         [*MODEL_LABELS, "outcome"])
        self._batch_size = factory.histogram(BATCH_SIZE, "Rows per predict call.", MODEL_LABELS, BATCH_SIZE_BUCKETS)
        self._predict = factory.histogram(
            PREDICT_SECONDS, "Time spent in the handler's predict, per call.", MODEL_LABELS, LATENCY_BUCKETS_S
        )
        self._isolation = factory.counter(
            ISOLATION_PREDICTS, "Extra predict calls run to find the failing requests of a failed batch.", MODEL_LABELS
        )
        # Every outcome's series exists from the start at 0: rate() over the first errors is then not 0, and
        # an alert on errors sees them increase from a known value.
        for outcome in outcomes:
            self.requests(outcome, 0)
        self._isolation(0, self._labels)
        self.in_flight = InFlight()
        in_flight_now = factory.gauge(IN_FLIGHT, "Requests in the model's hands now (decoded, not yet answered).",
                                      MODEL_LABELS)
        in_flight_seconds = factory.counter(
            IN_FLIGHT_SECONDS, "Time integral of the requests in the model's hands: its rate is the average concurrency.",
            MODEL_LABELS)

        def sample_in_flight() -> None:
            count, seconds = self.in_flight.sample()
            in_flight_now(count, self._labels)
            in_flight_seconds(seconds, self._labels)

        sample_in_flight()
        add_sampler = getattr(factory, "add_sampler", None)
        if add_sampler is not None:  # factories that flush periodically read the count at each flush
            add_sampler(sample_in_flight)
        if streaming:
            self._first_chunk = factory.histogram(
                FIRST_CHUNK_SECONDS, "Time from a batch's predict call to its first chunk.", MODEL_LABELS, LATENCY_BUCKETS_S
            )
            self._chunks = factory.histogram(STREAM_CHUNKS, "Chunks sent per streamed request.", MODEL_LABELS, CHUNK_BUCKETS)

    def batch(self, rows: int, predict_s: float) -> None:
        """One predict call over `rows` rows that took `predict_s` seconds."""
        self._batch_size(rows, self._labels)
        self._predict(predict_s, self._labels)

    def isolation_predicts(self, count: int) -> None:
        """`count` extra predict calls made to isolate the failing requests of a failed batch."""
        self._isolation(count, self._labels)

    def first_chunk(self, seconds: float) -> None:
        """A streaming batch's first chunk came `seconds` after its predict call."""
        self._first_chunk(seconds, self._labels)

    def chunks(self, count: int) -> None:
        """A streamed request ended after `count` chunks."""
        self._chunks(count, self._labels)

    def requests(self, outcome: str, count: int = 1) -> None:
        """`count` requests answered with `outcome`: success, invalid (the client's fault), error, or (streaming
        models) cancelled."""
        self._requests(count, self._outcome_labels[outcome])


def outcome_of(status: int) -> str:
    """The outcome label for a failed request's status."""
    return "invalid" if 400 <= status < 500 else "error"
