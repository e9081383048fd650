"""A MetricFactory over TorchServe's metrics cache, so metrics appear on TorchServe's metrics port.

TorchServe learns of these metrics at run time (`model_metrics_auto_detect=true` in the generated
config.properties), so archives need no metrics yaml. It serves histograms with its own fixed buckets
and a Hostname label; descriptions are not carried.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mfn.handlers.metrics import Record


class TorchServeMetricFactory:
    """Creates metrics through a TorchServe context's metrics cache."""

    def __init__(self, context: Any) -> None:
        from ts.metrics.metric_type_enum import MetricTypes

        self._cache = context.metrics
        self._types = MetricTypes

    def _create(self, name: str, unit: str, label_names: Sequence[str], kind: Any) -> Record:
        metric = self._cache.add_metric_to_cache(name, unit, list(label_names), kind)
        order = list(label_names)

        def record(value: float, labels: Mapping[str, str]) -> None:
            metric.add_or_update(value, [labels[label] for label in order])

        return record

    def counter(self, name: str, description: str, label_names: Sequence[str]) -> Record:
        return self._create(name, "count", label_names, self._types.COUNTER)

    def gauge(self, name: str, description: str, label_names: Sequence[str]) -> Record:
        return self._create(name, "count", label_names, self._types.GAUGE)

    def histogram(self, name: str, description: str, label_names: Sequence[str], buckets: Sequence[float]) -> Record:
        return self._create(name, "s" if name.endswith("_seconds") else "count", label_names, self._types.HISTOGRAM)
