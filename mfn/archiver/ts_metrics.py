"""mfn's metrics on TorchServe's metrics port, through its metrics cache.

TorchServe learns of these metrics at run time (`model_metrics_auto_detect=true` in the generated
config.properties), so archives need no metrics yaml. Each update is a log line the frontend parses, and
TorchServe would serve histograms with its own latency buckets (useless for batch sizes); so updates are
summed in the worker and applied once a second, histograms as bucket/sum/count counter families with
mfn's buckets, exactly as on Triton (see mfn.runtime.metric_batching). TorchServe adds a Hostname label;
descriptions are not carried.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mfn.runtime.metric_batching import FLUSH_INTERVAL_S, AggregatingMetricFactory


class _Series:
    """One labelled series of a TorchServe metric."""

    def __init__(self, metric: Any, values: list[str]) -> None:
        self._metric = metric
        self._values = values

    def increment(self, delta: float) -> None:
        self._metric.add_or_update(delta, self._values)

    def set(self, value: float) -> None:
        self._metric.add_or_update(value, self._values)


class _Family:
    def __init__(self, factory: TorchServeMetricFactory, name: str, kind: str) -> None:
        self._factory = factory
        self._name = name
        self._kind = kind

    def Metric(self, labels: Mapping[str, str]) -> _Series:  # noqa: N802 -- the shape Triton's API has
        names = list(labels)
        metric = self._factory.cache_metric(self._name, names, self._kind)
        return _Series(metric, [labels[name] for name in names])


class TorchServeMetricFactory(AggregatingMetricFactory):
    """Creates metrics through a TorchServe context's metrics cache; updates reach it once per flush interval."""

    def __init__(self, context: Any, flush_interval_s: float = FLUSH_INTERVAL_S) -> None:
        from ts.metrics.metric_type_enum import MetricTypes

        super().__init__(flush_interval_s)
        self._cache = context.metrics
        self._types = MetricTypes
        self._metrics: dict[str, Any] = {}

    def server_family(self, name: str, description: str, kind: str) -> Any:
        return self.cached_family(name, lambda: _Family(self, name, kind))

    def cache_metric(self, name: str, label_names: list[str], kind: str) -> Any:
        """TorchServe's metric object for `name`, made once: every series of a name has the same label names."""
        if name not in self._metrics:
            self._metrics[name] = self._new_metric(name, label_names, kind)
        return self._metrics[name]

    def _new_metric(self, name: str, label_names: list[str], kind: str) -> Any:
        # A histogram's bucket, sum and count series are counters: every worker adds to the same series, and
        # TorchServe 0.12's Prometheus client exposes a counter under its own name (no "_total" appended).
        metric_type = self._types.GAUGE if kind == "gauge" else self._types.COUNTER
        return self._cache.add_metric_to_cache(name, "count", label_names, metric_type)
