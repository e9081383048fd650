"""The in-flight gauge and its time integral, which the chart's autoscaling follows, on both servers."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import mfn
from mfn.local import deployments
from tests.conftest import HANDLERS, scrape, wait_for
from tests.handlers.slow import PREDICT_S

pytestmark = pytest.mark.integration
REQUESTS = 4


def in_flight(metrics_url: str) -> tuple[float, float] | None:
    """The slow model's in-flight gauge and request-seconds counter, as the metrics port shows them now (None
    before the adapter's first flush)."""
    values = {name: value for name, labels, value in scrape(metrics_url)
              if labels.get("model") == "slow" and name.startswith("mfn_inflight")}
    if "mfn_inflight_requests" not in values:
        return None
    return values["mfn_inflight_requests"], values["mfn_inflight_request_seconds_total"]


@pytest.mark.parametrize("target", ["triton", "torchserve"])
def test_the_in_flight_gauge_rises_with_load_and_falls_back_to_zero(target, tmp_path):
    mfn.package(f"{HANDLERS / 'slow.py'}:Slow", tmp_path, server=target)
    name = f"inflight-{target}"
    deployment = deployments.deploy(tmp_path, name=name, drain_timeout_s=0)
    try:
        # The first values reach the server with the adapter's first flush.
        start = wait_for(lambda: in_flight(deployment.metrics_url), 5, "the in-flight series", every_s=0.2)
        assert start == (0.0, 0.0)
        sent = threading.Barrier(REQUESTS + 1)

        def call(row: int) -> None:
            with mfn.Client(name, timeout_s=60.0, retries=0) as client:
                client.endpoint("slow")
                sent.wait()
                client.infer("slow", {"x": [[row, row]]})

        seen = []
        with ThreadPoolExecutor(REQUESTS) as pool:
            futures = [pool.submit(call, row) for row in range(REQUESTS)]
            sent.wait()
            while not all(future.done() for future in futures):
                seen.append(in_flight(deployment.metrics_url)[0])
                time.sleep(0.1)
            for future in futures:
                future.result()
        # Batches of at most two, a second each: a flush (one a second) falls inside every batch.
        assert 1.0 <= max(seen) <= 2.0, seen
        _, request_seconds = wait_for(lambda: (now := in_flight(deployment.metrics_url))[0] == 0.0 and now, 5,
                                      "the in-flight gauge back at 0", every_s=0.2)
        # Every request spent at least the predict's second in the model's hands, and none more than the whole run.
        assert REQUESTS * PREDICT_S * 0.95 <= request_seconds <= REQUESTS * (REQUESTS * PREDICT_S + 1.0)
    finally:
        deployments.undeploy(name)
