"""Metric updates summed in the handler's process and applied to the server by a background thread.

Servers take custom-metric updates from a handler's process one call at a time: each is a round trip
from Triton's Python stub to the server, or a log line TorchServe's frontend parses. A handler records
several per predict call, and that cost rivalled a light model's whole predict. So updates are summed
here and applied once per flush interval. Histograms are summed into their bucket, sum and count series
and exposed as counter families named `<name>_bucket{le=...}`, `<name>_sum` and `<name>_count` -- the
series Prometheus stores for a histogram, with mfn's own buckets (batch sizes get batch-size buckets on
every server), so every query (`histogram_quantile`, `rate`) works unchanged; only the metadata TYPE
reads `counter`. A flush costs one update per changed series, however many requests came in between.
"""

from __future__ import annotations

import bisect
import logging
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from mfn.handlers.metrics import Record

# Prometheus scrapes every 5 s or slower; a second's delay in the counts is invisible to it.
FLUSH_INTERVAL_S = 1.0

LabelKey = tuple[tuple[str, str], ...]
_FROZEN_KEYS = 256  # per metric: mfn's label sets are a handful per model


def frozen_labels(labels: Mapping[str, str]) -> Mapping[str, str]:
    """`labels` as a read-only copy: recorded often, it is keyed once (any factory takes it as a Mapping)."""
    return MappingProxyType(dict(labels))


def bucket_label(bound: float) -> str:
    """The `le` label value for a bucket's upper bound, spelt as Prometheus's own clients spell it."""
    return "+Inf" if math.isinf(bound) else repr(float(bound))


class _Counter:
    def __init__(self) -> None:
        self.delta = 0.0

    def add(self, value: float) -> None:
        self.delta += value


class _Gauge:
    def __init__(self) -> None:
        self.value: float | None = None

    def add(self, value: float) -> None:
        self.value = value


class _Histogram:
    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # per bucket, not cumulative; the last is +Inf
        self.total = 0.0

    def add(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value


class _Family:
    """One metric name: its pending updates per label set and the server-side children they go to."""

    def __init__(self, factory: AggregatingMetricFactory, name: str, description: str, kind: str, buckets=None) -> None:
        self.factory = factory
        self.name = name
        self.description = description
        self.kind = kind
        self.buckets = tuple(buckets) if buckets is not None else None
        self.pending: dict[LabelKey, Any] = {}
        self.children: dict[Any, Any] = {}
        # For label sets nobody can change (mfn's own, frozen: see frozen_labels), by identity: their key, and
        # the pending update they last went to while that pending map is still the current one. A per-request
        # record then neither sorts the labels nor hashes the key.
        self._frozen: dict[int, tuple[Mapping[str, str], LabelKey, dict, Any]] = {}

    def record(self, value: float, labels: Mapping[str, str]) -> None:
        entry = self._frozen.get(id(labels))
        if entry is not None and entry[0] is not labels:
            entry = None
        with self.factory.lock:
            if entry is not None and entry[2] is self.pending:
                entry[3].add(value)
                return
            key = entry[1] if entry is not None else tuple(sorted(labels.items()))
            update = self.pending.get(key)
            if update is None:
                update = self.pending[key] = self._new_update()
            update.add(value)
            if type(labels) is MappingProxyType and (entry is not None or len(self._frozen) < _FROZEN_KEYS):
                self._frozen[id(labels)] = (labels, key, self.pending, update)  # held: the id stays this object's

    def _new_update(self):
        if self.kind == "counter":
            return _Counter()
        if self.kind == "gauge":
            return _Gauge()
        return _Histogram(self.buckets)

    def take(self) -> dict[LabelKey, Any]:
        """The pending updates, leaving none; the caller holds the factory's lock."""
        taken, self.pending = self.pending, {}
        return taken

    def apply(self, updates: dict[LabelKey, Any]) -> None:
        """Send `updates` to the server: one call per series that changed."""
        for key, update in updates.items():
            if isinstance(update, _Counter):
                self._child("", key).increment(update.delta)
            elif isinstance(update, _Gauge):
                self._child("", key).set(update.value)
            else:
                self._apply_histogram(key, update)

    def _apply_histogram(self, key: LabelKey, update: _Histogram) -> None:
        # Every bucket is exposed from the first flush, so histogram_quantile sees the full ladder: servers
        # that show a series only once it is updated (TorchServe) get a zero increment for the empty ones.
        first = ("_count", key) not in self.children
        cumulative = 0
        for bound, count in zip((*update.buckets, math.inf), update.counts):
            cumulative += count
            if cumulative or first:
                self._child("_bucket", (*key, ("le", bucket_label(bound)))).increment(cumulative)
        self._child("_sum", key).increment(update.total)
        self._child("_count", key).increment(cumulative)

    def _child(self, suffix: str, key: LabelKey):
        child = self.children.get((suffix, key))
        if child is None:
            family = self.factory.server_family(self.name + suffix, self.description, self.kind)
            child = self.children[(suffix, key)] = family.Metric(labels=dict(key))
        return child


class AggregatingMetricFactory:
    """A MetricFactory whose updates reach the server once per flush interval.

    Subclasses say how to reach the server: `server_family(name, description, kind)` returns an object
    whose `Metric(labels=...)` gives a series with `increment(delta)` and `set(value)`.
    """

    def __init__(self, flush_interval_s: float = FLUSH_INTERVAL_S) -> None:
        self.lock = threading.Lock()
        self._families: list[_Family] = []
        self._server_families: dict[str, Any] = {}
        self._flush_interval_s = flush_interval_s
        self._stopping = threading.Event()
        self._flusher: threading.Thread | None = None
        self._samplers: list[Callable[[], None]] = []

    def add_sampler(self, sample: Callable[[], None]) -> None:
        """Call `sample` at the start of every flush, so it records values read at that moment (gauges of
        what is happening now, which a record per change would blur into the last change before the flush)."""
        self._samplers.append(sample)

    def counter(self, name: str, description: str, label_names: Sequence[str]) -> Record:
        return self._family(name, description, "counter")

    def gauge(self, name: str, description: str, label_names: Sequence[str]) -> Record:
        return self._family(name, description, "gauge")

    def histogram(self, name: str, description: str, label_names: Sequence[str], buckets: Sequence[float]) -> Record:
        return self._family(name, description, "histogram", buckets)

    def server_family(self, name: str, description: str, kind: str) -> Any:
        raise NotImplementedError

    def _family(self, name: str, description: str, kind: str, buckets=None) -> Record:
        family = _Family(self, name, description, kind, buckets)
        self._families.append(family)
        if self._flusher is None:
            self._flusher = threading.Thread(target=self._flush_until_stopped, name="mfn-metrics", daemon=True)
            self._flusher.start()
        return family.record

    def cached_family(self, name: str, make: Any) -> Any:
        family = self._server_families.get(name)
        if family is None:
            family = self._server_families[name] = make()
        return family

    def flush(self) -> None:
        """Apply every pending update now."""
        for sample in self._samplers:
            sample()
        with self.lock:
            taken = [(family, family.take()) for family in self._families]
        for family, updates in taken:
            family.apply(updates)

    def close(self) -> None:
        """Stop the flusher after a last flush, so nothing recorded before unloading is lost."""
        self._stopping.set()
        if self._flusher is not None:
            self._flusher.join()
            self._flusher = None
        self.flush()

    def _flush_until_stopped(self) -> None:
        while not self._stopping.wait(self._flush_interval_s):
            try:
                self.flush()
            except Exception:  # a failed update must not stop every later one
                logging.getLogger("mfn.metrics").exception("applying metric updates to the server failed")
