"""mfn's metrics on Triton's own metrics port, through the Python backend's custom-metrics API.

Updates are summed in the stub and applied once a second (see mfn.runtime.metric_batching).
"""

from __future__ import annotations

from typing import Any

from mfn.runtime.metric_batching import FLUSH_INTERVAL_S, AggregatingMetricFactory, bucket_label

__all__ = ["FLUSH_INTERVAL_S", "TritonMetricFactory", "bucket_label"]


class TritonMetricFactory(AggregatingMetricFactory):
    """Creates mfn's metrics on Triton's metrics port; updates reach the server once per flush interval."""

    def __init__(self, flush_interval_s: float = FLUSH_INTERVAL_S) -> None:
        import triton_python_backend_utils as pb_utils

        super().__init__(flush_interval_s)
        self._pb_utils = pb_utils

    def server_family(self, name: str, description: str, kind: str) -> Any:
        kinds = self._pb_utils.MetricFamily
        server_kind = kinds.GAUGE if kind == "gauge" else kinds.COUNTER
        return self.cached_family(name, lambda: kinds(name=name, description=description, kind=server_kind))
