"""A MetricFactory over the Python backend's custom metrics, served on Triton's own metrics port."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mfn.handlers.metrics import Record


class TritonMetricFactory:
    """Creates `pb_utils.MetricFamily` metrics; one child metric per label set, created on first use."""

    def __init__(self) -> None:
        import triton_python_backend_utils as pb_utils

        self._pb_utils = pb_utils

    def _create(self, name: str, description: str, kind: Any, update: str, buckets: Sequence[float] | None = None) -> Record:
        family = self._pb_utils.MetricFamily(name=name, description=description, kind=kind)
        children: dict[tuple[tuple[str, str], ...], Any] = {}

        def record(value: float, labels: Mapping[str, str]) -> None:
            key = tuple(sorted(labels.items()))
            child = children.get(key)
            if child is None:
                extra = {"buckets": list(buckets)} if buckets is not None else {}
                child = children[key] = family.Metric(labels=dict(labels), **extra)
            getattr(child, update)(value)

        return record

    def counter(self, name: str, description: str, label_names: Sequence[str]) -> Record:
        return self._create(name, description, self._pb_utils.MetricFamily.COUNTER, "increment")

    def gauge(self, name: str, description: str, label_names: Sequence[str]) -> Record:
        return self._create(name, description, self._pb_utils.MetricFamily.GAUGE, "set")

    def histogram(self, name: str, description: str, label_names: Sequence[str], buckets: Sequence[float]) -> Record:
        return self._create(name, description, self._pb_utils.MetricFamily.HISTOGRAM, "observe", buckets)
