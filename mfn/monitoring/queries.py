"""PromQL over mfn's handler metrics and the servers' own, shared by the alert rules and the dashboard.

Triton labels its metrics `model`/`version`, TorchServe `model_name`/`model_version`; the recording
rules below rename TorchServe's so every query can group by `model` and `version`.
"""

from __future__ import annotations

WINDOW = "5m"

REQUEST_RATE = "sum by (model, version, outcome) (rate(mfn_requests_total[{w}]))"
ERROR_RATIO = (
    'sum by (model, version) (rate(mfn_requests_total{{outcome="error"}}[{w}]))'
    " / sum by (model, version) (rate(mfn_requests_total[{w}]))"
)
PREDICT_QUANTILE = "histogram_quantile({q}, sum by (model, version, le) (rate(mfn_predict_duration_seconds_bucket[{w}])))"
FIRST_CHUNK_QUANTILE = "histogram_quantile({q}, sum by (model, version, le) (rate(mfn_first_chunk_seconds_bucket[{w}])))"
MEAN_CHUNKS = (
    "sum by (model, version) (rate(mfn_stream_chunks_sum[{w}])) / sum by (model, version) (rate(mfn_stream_chunks_count[{w}]))"
)
MEAN_BATCH_SIZE = "sum by (model, version) (rate(mfn_batch_size_sum[{w}])) / sum by (model, version) (rate(mfn_batch_size_count[{w}]))"

# Seconds a request waits in the server's queue, averaged over the window, for either server.
QUEUE_SECONDS_RECORD = "mfn:queue_seconds_per_request:rate5m"
# Triton's queue time counter covers successful requests, so it is averaged over those.
TRITON_QUEUE_SECONDS = (
    "sum by (model, version) (rate(nv_inference_queue_duration_us[5m]))"
    " / sum by (model, version) (rate(nv_inference_request_success[5m])) / 1e6"
)
# TorchServe labels the queue time of requests without a version `model_version="default"`, which no `mfn_*`
# series carries: its figure is kept per model (no version label), and joins mfn's series on `model`.
TORCHSERVE_QUEUE_SECONDS = (
    "sum without (model_name) (label_replace("
    "sum by (model_name) (rate(ts_queue_latency_microseconds[5m]))"
    " / sum by (model_name) (rate(ts_inference_requests_total[5m])) / 1e6,"
    ' "model", "$1", "model_name", "(.*)"))'
)

# Requests in the server's hands per pod (queued, or in the model's), averaged over a minute: the rates of the
# time integrals each server exports (Little's law). prometheus-adapter serves it to the chart's HPA.
CONCURRENCY_RECORD = "mfn:concurrency:rate1m"
_IN_FLIGHT = "sum by (namespace, pod) (rate(mfn_inflight_request_seconds_total[1m]))"
_QUEUED = (
    "(sum by (namespace, pod) (rate(nv_inference_queue_duration_us[1m]))"
    " or sum by (namespace, pod) (rate(ts_queue_latency_microseconds[1m]))) / 1e6"
)
CONCURRENCY = f"({_IN_FLIGHT} + {_QUEUED}) or {_IN_FLIGHT}"


# Response cache lookups per second by result, for either cache: mfn's counter (TorchServe's local LRU, Redis on
# both servers) or Triton's own response cache (kind='local' on Triton), whose hits never reach mfn's adapter.
CACHE_RECORD = "mfn:cache_requests:rate5m"
_TRITON_CACHE = (
    'label_replace(sum by (model, version) (rate(nv_cache_num_{kind}_per_model[5m])), "result", "{result}", "", "")'
)
CACHE_REQUESTS = (
    "sum by (model, version, result) (rate(mfn_cache_requests_total[5m]))"
    f" or {_TRITON_CACHE.format(kind='hits', result='hit')} or {_TRITON_CACHE.format(kind='misses', result='miss')}"
)
CACHE_HIT_RATIO = (
    f'sum by (model, version) ({CACHE_RECORD}{{{{result="hit"}}}}) / sum by (model, version) ({CACHE_RECORD})'
)


def window(query: str, length: str = WINDOW, quantile: float | None = None) -> str:
    """Fill a query template's window (and quantile)."""
    return query.format(w=length, q=quantile)
