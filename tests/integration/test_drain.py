"""Graceful drain: requests accepted before `mfn undeploy` began are all answered, on both servers."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import mfn
from mfn.errors import InvokeError
from mfn.local import launching, deployments
from mfn.local.supervision import read_status
from tests.conftest import HANDLERS, scrape, wait_for
from tests.handlers.sleepy import CRASH

pytestmark = pytest.mark.integration
IN_FLIGHT = 6  # three batches of two on a one-second model: the last is answered about 3 s after undeploy
LONG_PREDICT_S = 5.0
LONG_IN_FLIGHT = 8  # one batch of sleepy's
# What each server shows of the requests that reached it. TorchServe counts each when it accepts it. Triton
# shows the queued ones and the finished ones at once, and those in the model at mfn's next metrics flush: a
# request finished meanwhile may count twice, but none finishes before the first predict (a second or more
# here) has ended, long after all of them arrived. Names as the servers expose them (Triton's counters have no
# "_total").
ARRIVED = {
    "torchserve": ("ts_inference_requests_total",),
    "triton": ("nv_inference_pending_request_count", "nv_inference_request_success",
               "nv_inference_request_failure", "mfn_inflight_requests"),
}


@pytest.mark.parametrize("target", ["triton", "torchserve"])
def test_undeploy_answers_every_request_in_flight(target, tmp_path):
    mfn.package(f"{HANDLERS / 'slow.py'}:Slow", tmp_path, server=target)
    name = f"drain-{target}"
    deployment = deployments.deploy(tmp_path, name=name)
    sent = threading.Barrier(IN_FLIGHT + 1)

    def call(row: int) -> np.ndarray:
        with mfn.Client(name, timeout_s=60.0, retries=0) as client:
            client.endpoint("slow")
            sent.wait()
            return client.infer("slow", {"x": [[row, row]]})["y"]

    with ThreadPoolExecutor(IN_FLIGHT) as pool:
        futures = [pool.submit(call, row) for row in range(IN_FLIGHT)]
        sent.wait()
        wait_for(lambda: arrived(deployment) >= IN_FLIGHT, 10.0, "every request to reach the server")
        started = time.monotonic()
        deployments.undeploy(name)
        stopped_after_s = time.monotonic() - started
        answers = [future.result() for future in futures]
    assert [answer.tolist() for answer in answers] == [[[2.0 * row] * 2] for row in range(IN_FLIGHT)]
    assert stopped_after_s < deployment_drain_limit_s()
    assert read_status(deployment).state == "unknown"  # the work directory is gone with the deployment


def test_torchserve_undeploy_answers_predicts_longer_than_any_before(tmp_path):
    """No quiet moment tells a long predict from an idle server: the drain waits for every accepted request."""
    mfn.package(f"{HANDLERS / 'sleepy.py'}:Sleepy", tmp_path, server="torchserve")
    name = "drain-long"
    deployment = deployments.deploy(tmp_path, name=name)
    with mfn.Client(name, timeout_s=60.0, retries=0) as client:
        client.infer("sleepy", {"seconds": [[0.1]]})

    def call(_: int) -> np.ndarray:
        with mfn.Client(name, timeout_s=60.0, retries=0) as client:
            return client.infer("sleepy", {"seconds": [[LONG_PREDICT_S]]})["slept"]

    with ThreadPoolExecutor(LONG_IN_FLIGHT) as pool:
        futures = [pool.submit(call, index) for index in range(LONG_IN_FLIGHT)]
        wait_for(lambda: arrived(deployment) >= 1 + LONG_IN_FLIGHT, 10.0, "every request to reach the server")
        started = time.monotonic()
        deployments.undeploy(name)
        stopped_after_s = time.monotonic() - started
        answers = [future.result() for future in futures]
    assert [answer.tolist() for answer in answers] == [[[LONG_PREDICT_S]]] * LONG_IN_FLIGHT
    assert LONG_PREDICT_S - 1.0 < stopped_after_s < deployment_drain_limit_s()


def test_torchserve_undeploy_with_nothing_in_flight_is_prompt(tmp_path):
    """With nothing in flight the server stops at once, however slow the model's earlier predicts were."""
    mfn.package(f"{HANDLERS / 'sleepy.py'}:Sleepy", tmp_path, server="torchserve")
    name = "drain-idle"
    deployments.deploy(tmp_path, name=name)
    with mfn.Client(name, timeout_s=60.0, retries=0) as client:
        client.infer("sleepy", {"seconds": [[3.0]]})
    started = time.monotonic()
    deployments.undeploy(name)
    assert time.monotonic() - started < 5.0  # a quiet window sized by that predict would take 2 s + its 5 s bucket


def test_torchserve_undeploy_after_a_request_torchserve_failed_itself_is_prompt(tmp_path):
    """A request whose worker died is counted as received and never as answered by mfn: the drain must not wait
    its whole timeout for it."""
    mfn.package(f"{HANDLERS / 'sleepy.py'}:Sleepy", tmp_path, server="torchserve")
    name = "drain-failed"
    deployment = deployments.deploy(tmp_path, name=name)
    with mfn.Client(name, timeout_s=60.0, retries=0) as client:
        client.infer("sleepy", {"seconds": [[0.1]]})
        with pytest.raises(InvokeError, match="Worker died"):
            client.infer("sleepy", {"seconds": [[CRASH]]})  # the worker exits under it
    wait_for(lambda: arrived(deployment) >= 2, 10.0, "both requests to be counted")
    started = time.monotonic()
    deployments.undeploy(name)
    assert time.monotonic() - started < launching.DRAIN_TIMEOUT_S / 2


def arrived(deployment) -> float:
    """How many requests have reached the deployment's server so far, by its metrics (see ARRIVED)."""
    names = ARRIVED[deployment.server]
    return sum(value for name, _, value in scrape(deployment.metrics_url) if name in names)


def deployment_drain_limit_s() -> float:
    return launching.DRAIN_TIMEOUT_S + launching.STOP_GRACE_S
