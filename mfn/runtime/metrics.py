"""Handler metrics the batch loop reports, with one name set on every server.

The loop talks to a `LoopMetrics`; each server adapter supplies the implementation that feeds its
server's own metrics endpoint (Triton's custom metrics, TorchServe's metrics cache).
"""

from __future__ import annotations

from typing import Protocol

REQUESTS = "mfn_requests_total"
BATCH_SIZE = "mfn_batch_size"
PREDICT_SECONDS = "mfn_predict_duration_seconds"

# Rows per predict call: powers of two up to the largest batch sizes people configure.
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
# Inference on CPU or GPU takes from well under a millisecond to a few seconds.
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

OUTCOMES = ("success", "invalid", "error")


class LoopMetrics(Protocol):
    """What the batch loop records."""

    def batch(self, rows: int, predict_s: float) -> None:
        """One predict call over `rows` rows that took `predict_s` seconds."""

    def requests(self, outcome: str, count: int = 1) -> None:
        """`count` requests answered with `outcome`: success, invalid (the client's fault) or error."""


class NoMetrics:
    """Records nothing: for in-process use."""

    def batch(self, rows: int, predict_s: float) -> None:
        pass

    def requests(self, outcome: str, count: int = 1) -> None:
        pass


def outcome_of(status: int) -> str:
    """The outcome label for a failed request's status."""
    return "invalid" if 400 <= status < 500 else "error"
