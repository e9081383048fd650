"""`mfn stats`: a summary of a running deployment computed from its live metrics endpoint.

Figures are totals since the deployment started, across the stops of an idle deployment (whose earlier runs'
counts mfn.local.idle_metrics keeps), with no Prometheus needed: requests by outcome, error rate,
mean batch size, predict latency percentiles from mfn's histogram, the server's mean queue time, for
streaming model functions the time to the first chunk and the chunks per request, and for cached ones the
response cache's hits, misses and errors.
"""

from __future__ import annotations

import math
import urllib.request
from collections import defaultdict
from dataclasses import asdict, dataclass, field

from mfn.local.state import Deployment
from mfn.errors import MfnError
from mfn.prometheus_text import samples
from mfn.runtime.metrics import BATCH_SIZE, FIRST_CHUNK_SECONDS, PREDICT_SECONDS, REQUESTS, STREAM_CHUNKS

CACHE_REQUESTS = "mfn_cache_requests"
# Triton's own response cache (kind='local' on Triton) counts in its own series, per model and version.
TRITON_CACHE = {"nv_cache_num_hits_per_model": "hit", "nv_cache_num_misses_per_model": "miss"}

Key = tuple[str, str]


@dataclass
class ModelStats:
    """One model version's figures."""

    model: str
    version: str
    requests: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    error_rate: float | None = None
    mean_batch_size: float | None = None
    predict_p50_s: float | None = None
    predict_p95_s: float | None = None
    predict_p99_s: float | None = None
    queue_mean_s: float | None = None
    first_chunk_p50_s: float | None = None
    first_chunk_p95_s: float | None = None
    mean_chunks: float | None = None
    # Response cache lookups by result (hit, miss, error), from mfn's counter or Triton's own cache counters.
    cache: dict[str, int] = field(default_factory=dict)
    cache_hit_ratio: float | None = None

    def to_json(self) -> dict:
        return asdict(self)


def deployment_stats(deployment: Deployment) -> list[ModelStats]:
    """Scrape the deployment's metrics endpoint and summarise each model version, with the counts of the runs
    before an idle deployment's last wake added."""
    from mfn.local.idle_metrics import history

    try:
        with urllib.request.urlopen(deployment.metrics_url, timeout=10) as response:
            text = response.read().decode()
    except OSError as error:
        raise MfnError(f"cannot read metrics of {deployment.name} at {deployment.metrics_url}: {error}") from None
    return summarise(text + "\n" + history(deployment.workdir), deployment.server)


def summarise(text: str, server: str) -> list[ModelStats]:  # noqa: C901
    """Compute the figures from Prometheus text exposition."""
    outcomes: dict[Key, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    batch: dict[Key, list[float]] = defaultdict(lambda: [0.0, 0.0])  # sum, count
    buckets: dict[Key, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    first_chunk: dict[Key, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    chunks: dict[Key, list[float]] = defaultdict(lambda: [0.0, 0.0])  # sum, count
    queue: dict[Key, list[float]] = defaultdict(lambda: [0.0, 0.0])  # microseconds, requests
    cache: dict[Key, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for sample in samples(text):
        labels = sample.labels
        mfn_key = (labels.get("model", ""), labels.get("version", ""))
        # Compared without `_total`: Triton's counters expose none, mfn's and TorchServe's do.
        name = sample.name.removesuffix("_total")
        if name == REQUESTS.removesuffix("_total"):
            outcomes[mfn_key][labels["outcome"]] += sample.value
        elif name == f"{BATCH_SIZE}_sum":
            batch[mfn_key][0] += sample.value
        elif name == f"{BATCH_SIZE}_count":
            batch[mfn_key][1] += sample.value
        elif name == f"{PREDICT_SECONDS}_bucket":
            buckets[mfn_key][float(labels["le"])] += sample.value
        elif name == f"{FIRST_CHUNK_SECONDS}_bucket":
            first_chunk[mfn_key][float(labels["le"])] += sample.value
        elif name in (f"{STREAM_CHUNKS}_sum", f"{STREAM_CHUNKS}_count"):
            chunks[mfn_key][name.endswith("_count")] += sample.value
        elif name == CACHE_REQUESTS:
            cache[mfn_key][labels["result"]] += sample.value
        elif name in TRITON_CACHE:
            cache[mfn_key][TRITON_CACHE[name]] += sample.value
        else:
            _queue_sample(name, labels, sample.value, queue)
    rows = []
    for key in sorted(set(outcomes) | set(batch) | set(cache)):
        counts = {outcome: int(value) for outcome, value in sorted(outcomes[key].items())}
        total = sum(counts.values())
        queued_us, queued_requests = queue.get(key) or queue.get((key[0], "*"), [0.0, 0.0])
        rows.append(ModelStats(
            model=key[0],
            version=key[1],
            requests=total,
            outcomes=counts,
            error_rate=counts.get("error", 0) / total if total else None,
            mean_batch_size=batch[key][0] / batch[key][1] if batch[key][1] else None,
            predict_p50_s=histogram_quantile(0.5, buckets[key]),
            predict_p95_s=histogram_quantile(0.95, buckets[key]),
            predict_p99_s=histogram_quantile(0.99, buckets[key]),
            queue_mean_s=queued_us / queued_requests / 1e6 if queued_requests else None,
            first_chunk_p50_s=histogram_quantile(0.5, first_chunk[key]),
            first_chunk_p95_s=histogram_quantile(0.95, first_chunk[key]),
            mean_chunks=chunks[key][0] / chunks[key][1] if chunks[key][1] else None,
            cache={result: int(value) for result, value in sorted(cache[key].items())} if key in cache else {},
            cache_hit_ratio=_hit_ratio(cache.get(key)),
        ))
    return rows


def _hit_ratio(results: dict[str, float] | None) -> float | None:
    lookups = sum(results.values()) if results else 0
    return results.get("hit", 0) / lookups if lookups else None  # type: ignore[union-attr]


def _queue_sample(name: str, labels: dict[str, str], value: float, queue: dict) -> None:
    if name == "nv_inference_queue_duration_us":
        queue[(labels["model"], labels["version"])][0] += value
    elif name == "nv_inference_request_success":
        queue[(labels["model"], labels["version"])][1] += value
    # TorchServe labels requests without a version "default", so its queue time is kept per model.
    elif name == "ts_queue_latency_microseconds":
        queue[(labels["model_name"], "*")][0] += value
    elif name == "ts_inference_requests":
        queue[(labels["model_name"], "*")][1] += value


def histogram_quantile(quantile: float, cumulative: dict[float, float]) -> float | None:
    """Prometheus's histogram_quantile over cumulative bucket counts: linear within the chosen bucket."""
    bounds = sorted(cumulative)
    if not bounds or cumulative[bounds[-1]] == 0:
        return None
    rank = quantile * cumulative[bounds[-1]]
    lower_bound, lower_count = 0.0, 0.0
    for bound in bounds:
        count = cumulative[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


def format_stats(rows: list[ModelStats]) -> str:
    """A short table for people."""
    if not rows:
        return "no requests yet"

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value * 1000:.2f} ms"

    streams = any(row.mean_chunks is not None for row in rows)
    caches = any(row.cache for row in rows)
    head = f"{'model':20} {'ver':>3} {'requests':>8} {'errors':>7} {'batch':>6} {'p50':>10} {'p95':>10} {'queue':>10}"
    lines = [head + (f" {'1st chunk p50':>13} {'chunks':>7}" if streams else "") + (f" {'cache hits':>10}" if caches else "")]
    for row in rows:
        errors = "-" if row.error_rate is None else f"{row.error_rate:.1%}"
        batch = "-" if row.mean_batch_size is None else f"{row.mean_batch_size:.2f}"
        line = (f"{row.model:20} {row.version:>3} {row.requests:>8} {errors:>7} {batch:>6} "
                f"{ms(row.predict_p50_s):>10} {ms(row.predict_p95_s):>10} {ms(row.queue_mean_s):>10}")
        if streams:
            mean_chunks = "-" if row.mean_chunks is None else f"{row.mean_chunks:.1f}"
            line += f" {ms(row.first_chunk_p50_s):>13} {mean_chunks:>7}"
        if caches:
            line += f" {'-' if row.cache_hit_ratio is None else format(row.cache_hit_ratio, '.1%'):>10}"
        lines.append(line)
    return "\n".join(lines)
