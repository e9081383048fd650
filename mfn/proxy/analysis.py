"""A rollout's analysis: each track's requests, error ratio and p99 over one window, from two scrapes of its
metrics endpoint, and the rule the canary breaks, if any.

The figures are mfn's own series on both servers: `mfn_requests_total` by outcome and the
`mfn_predict_duration_seconds` histogram, summed over the track's models; a window is the difference between a
scrape at its start and one now, as Prometheus's `increase` would see it.
"""

from __future__ import annotations

import urllib.request
from collections import defaultdict
from dataclasses import asdict, dataclass

from mfn.monitoring.stats import histogram_quantile
from mfn.prometheus_text import samples
from mfn.runtime.metrics import PREDICT_SECONDS, REQUESTS

# Fewer canary requests than this in a window say nothing yet; the rule waits for more.
MIN_REQUESTS = 5


@dataclass(frozen=True)
class Totals:
    """Counts since a server started: requests by outcome, and the predict-time histogram's cumulative buckets."""

    outcomes: dict[str, float]
    buckets: dict[float, float]


@dataclass(frozen=True)
class Figures:
    requests: int
    errors: int
    error_ratio: float | None
    p99_ms: float | None

    def to_json(self) -> dict:
        return asdict(self)


def totals(text: str) -> Totals:
    outcomes: dict[str, float] = defaultdict(float)
    buckets: dict[float, float] = defaultdict(float)
    for sample in samples(text):
        if sample.name.removesuffix("_total") == REQUESTS.removesuffix("_total"):
            outcomes[sample.labels["outcome"]] += sample.value
        elif sample.name == f"{PREDICT_SECONDS}_bucket":
            buckets[float(sample.labels["le"])] += sample.value
    return Totals(dict(outcomes), dict(buckets))


def scrape(metrics_url: str) -> Totals:
    with urllib.request.urlopen(metrics_url, timeout=5) as response:
        return totals(response.read().decode())


def window(start: Totals, now: Totals) -> Figures:
    """What happened between two scrapes (a server restarted in between counts from zero again)."""
    outcomes = {key: value - start.outcomes.get(key, 0.0) for key, value in now.outcomes.items()}
    if any(value < 0 for value in outcomes.values()):
        start, outcomes = Totals({}, {}), dict(now.outcomes)
    buckets = {bound: value - start.buckets.get(bound, 0.0) for bound, value in now.buckets.items()}
    requests = int(sum(outcomes.values()))
    errors = int(outcomes.get("error", 0.0))
    p99 = histogram_quantile(0.99, buckets)
    return Figures(requests, errors, errors / requests if requests else None, p99 * 1000 if p99 is not None else None)


def breach(canary: Figures, primary: Figures | None, max_error_ratio: float | None, max_p99_ms: float | None) -> str | None:
    """Why the canary fails the rollout's rule over this window, naming the figure; None while it holds (or too
    few requests came to judge)."""
    if canary.requests < MIN_REQUESTS:
        return None
    beside = f" (primary {_describe(primary)})" if primary is not None else ""
    if max_error_ratio is not None and canary.error_ratio is not None and canary.error_ratio > max_error_ratio:
        return (f"error ratio {canary.error_ratio:.3f} on the canary ({canary.errors} of {canary.requests} requests)"
                f"{beside} is above --max-error-ratio {max_error_ratio:g}")
    if max_p99_ms is not None and canary.p99_ms is not None and canary.p99_ms > max_p99_ms:
        return f"p99 {canary.p99_ms:.1f} ms on the canary{beside} is above --max-p99-ms {max_p99_ms:g}"
    return None


def _describe(figures: Figures) -> str:
    ratio = "-" if figures.error_ratio is None else f"{figures.error_ratio:.3f}"
    p99 = "-" if figures.p99_ms is None else f"{figures.p99_ms:.1f} ms"
    return f"error ratio {ratio}, p99 {p99}, {figures.requests} requests"
