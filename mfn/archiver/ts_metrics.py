"""mfn's handler metrics through TorchServe's metrics cache, so they appear on TorchServe's metrics port.

TorchServe learns of these metrics at run time (`model_metrics_auto_detect=true` in the generated
config.properties), so archives need no metrics yaml of their own.
"""

from __future__ import annotations

from typing import Any

from mfn.runtime.metrics import BATCH_SIZE, PREDICT_SECONDS, REQUESTS
from mfn.spec import ModelSpec


class TorchServeMetrics:
    """LoopMetrics over a TorchServe context's metrics cache."""

    def __init__(self, context: Any, spec: ModelSpec) -> None:
        from ts.metrics.metric_type_enum import MetricTypes

        cache = context.metrics
        self._labels = [spec.name, str(spec.version)]
        self._requests = cache.add_metric_to_cache(REQUESTS, "count", ["model", "version", "outcome"], MetricTypes.COUNTER)
        self._batch_size = cache.add_metric_to_cache(BATCH_SIZE, "count", ["model", "version"], MetricTypes.HISTOGRAM)
        self._predict = cache.add_metric_to_cache(PREDICT_SECONDS, "s", ["model", "version"], MetricTypes.HISTOGRAM)

    def batch(self, rows: int, predict_s: float) -> None:
        self._batch_size.add_or_update(rows, self._labels)
        self._predict.add_or_update(predict_s, self._labels)

    def requests(self, outcome: str, count: int = 1) -> None:
        self._requests.add_or_update(count, [*self._labels, outcome])
