"""The metrics API handlers use (`ctx.metrics`) and the factory interface each server implements.

Each server adapter supplies a `MetricFactory` that creates metrics on its server's own metrics port
(Triton's custom metrics, TorchServe's metrics cache); everything above the factory is shared, so the
same names and labels appear on both servers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

# Inference on CPU or GPU takes from tens of microseconds (a small model, batch of one) to a few seconds;
# the low buckets keep percentiles of fast models meaningful (`mfn stats`, histogram_quantile).
LATENCY_BUCKETS_S = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
MODEL_LABELS = ("model", "version")
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

Record = Callable[[float, Mapping[str, str]], None]


class MetricFactory(Protocol):
    """Creates metrics on one server; each returns a function recording a value for a label set."""

    def counter(self, name: str, description: str, label_names: Sequence[str]) -> Record: ...

    def gauge(self, name: str, description: str, label_names: Sequence[str]) -> Record: ...

    def histogram(self, name: str, description: str, label_names: Sequence[str], buckets: Sequence[float]) -> Record: ...


class InMemoryMetrics:
    """A MetricFactory that keeps values in a dict: for running handlers in-process and for tests."""

    def __init__(self) -> None:
        self.totals: dict[tuple[str, tuple[tuple[str, str], ...]], list[float]] = {}

    def _recorder(self, name: str) -> Record:
        def record(value: float, labels: Mapping[str, str]) -> None:
            count_and_sum = self.totals.setdefault((name, tuple(sorted(labels.items()))), [0, 0.0])
            count_and_sum[0] += 1
            count_and_sum[1] += value

        return record

    def total(self, name: str, **labels: str) -> float:
        """Sum of the values recorded for `name` over every label set that includes `labels`."""
        return sum(
            count_and_sum[1]
            for (metric, label_set), count_and_sum in self.totals.items()
            if metric == name and set(labels.items()) <= set(label_set)
        )

    def counter(self, name: str, description: str, label_names: Sequence[str]) -> Record:
        return self._recorder(name)

    def gauge(self, name: str, description: str, label_names: Sequence[str]) -> Record:
        return self._recorder(name)

    def histogram(self, name: str, description: str, label_names: Sequence[str], buckets: Sequence[float]) -> Record:
        return self._recorder(name)


class HandlerMetrics:
    """`ctx.metrics`: a handler's own metrics, served beside mfn's with `model` and `version` labels added."""

    def __init__(self, factory: MetricFactory, model: str, version: int) -> None:
        self._factory = factory
        self._model_labels = {"model": model, "version": str(version)}

    def counter(self, name: str, description: str, labels: Sequence[str] = ()) -> Counter:
        """A monotonically increasing count, e.g. tokens generated."""
        label_names = self._check(name, labels)
        return Counter(self._factory.counter(name, description, label_names), self._model_labels, labels)

    def gauge(self, name: str, description: str, labels: Sequence[str] = ()) -> Gauge:
        """A value that goes up and down, e.g. a cache's size."""
        label_names = self._check(name, labels)
        return Gauge(self._factory.gauge(name, description, label_names), self._model_labels, labels)

    def histogram(
        self, name: str, description: str, labels: Sequence[str] = (), buckets: Sequence[float] = LATENCY_BUCKETS_S
    ) -> Histogram:
        """A distribution, e.g. a step's duration in seconds; the default buckets suit millisecond-scale work."""
        label_names = self._check(name, labels)
        if list(buckets) != sorted(set(buckets)) or not buckets:
            raise ValueError(f"metric {name!r}: buckets must be distinct and increasing, got {list(buckets)}")
        return Histogram(self._factory.histogram(name, description, label_names, buckets), self._model_labels, labels)

    @staticmethod
    def _check(name: str, labels: Sequence[str]) -> list[str]:
        if not _METRIC_NAME.fullmatch(name):
            raise ValueError(f"metric name {name!r} is not a valid Prometheus name: use letters, digits, '_' and ':'")
        if name.startswith("mfn_") or name.startswith(("nv_", "ts_")):
            raise ValueError(f"metric name {name!r} uses a prefix reserved for mfn and the servers; choose another")
        for label in labels:
            if not _LABEL_NAME.fullmatch(label) or label.startswith("__"):
                raise ValueError(f"metric {name!r}: label {label!r} is not a valid Prometheus label name")
            if label in MODEL_LABELS:
                raise ValueError(f"metric {name!r}: label {label!r} is added by mfn; drop it from labels")
        return [*MODEL_LABELS, *labels]


class _UserMetric:
    def __init__(self, record: Record, model_labels: Mapping[str, str], label_names: Sequence[str]) -> None:
        self._record = record
        self._model_labels = dict(model_labels)
        self._label_names = set(label_names)

    def _labels(self, given: Mapping[str, str]) -> dict[str, str]:
        if set(given) != self._label_names:
            raise ValueError(f"give exactly the declared labels {sorted(self._label_names)}, got {sorted(given)}")
        return {**self._model_labels, **{key: str(value) for key, value in given.items()}}


class Counter(_UserMetric):
    def inc(self, value: float = 1.0, **labels: str) -> None:
        if value < 0:
            raise ValueError("a counter only goes up: use a gauge for values that fall")
        self._record(value, self._labels(labels))


class Gauge(_UserMetric):
    def set(self, value: float, **labels: str) -> None:
        self._record(value, self._labels(labels))


class Histogram(_UserMetric):
    def observe(self, value: float, **labels: str) -> None:
        self._record(value, self._labels(labels))
