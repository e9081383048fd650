"""Metric updates summed in the handler's process: every record reaches the server once, across flushes, whether
its labels are a frozen set mfn records per request or a plain mapping a handler passes."""

from __future__ import annotations

import pytest

from mfn.runtime.metric_batching import AggregatingMetricFactory, frozen_labels


class Server:
    """What a server family receives: increments per (name, labels)."""

    def __init__(self) -> None:
        self.totals: dict[tuple[str, tuple], float] = {}

    def family(self, name: str):
        server = self

        class Family:
            def Metric(self, labels):  # noqa: N802 - the servers' own spelling
                key = (name, tuple(sorted(labels.items())))

                class Series:
                    def increment(self, delta):
                        server.totals[key] = server.totals.get(key, 0) + delta

                    def set(self, value):
                        server.totals[key] = value

                return Series()

        return Family()


class Factory(AggregatingMetricFactory):
    def __init__(self, server: Server) -> None:
        super().__init__(flush_interval_s=3600)  # flushed by hand
        self.server = server

    def server_family(self, name, description, kind):
        return self.server.family(name)


@pytest.mark.parametrize("labels", [frozen_labels({"model": "m", "outcome": "success"}), {"model": "m", "outcome": "success"}])
def test_every_record_reaches_the_server_once_across_flushes(labels):
    server = Server()
    factory = Factory(server)
    requests = factory.counter("mfn_requests_total", "", ["model", "outcome"])
    try:
        for count in (3, 2, 0, 4):
            for _ in range(count):
                requests(1, labels)
            factory.flush()
        other = frozen_labels({"model": "m", "outcome": "error"})
        requests(1, other)
        requests(1, dict(labels))  # the same series through another mapping
        factory.flush()
    finally:
        factory.close()
    assert server.totals == {("mfn_requests_total", (("model", "m"), ("outcome", "success"))): 10,
                             ("mfn_requests_total", (("model", "m"), ("outcome", "error"))): 1}


def test_frozen_labels_cannot_change_under_their_cached_key():
    labels = frozen_labels({"model": "m"})
    with pytest.raises(TypeError):
        labels["model"] = "other"  # type: ignore[index]
