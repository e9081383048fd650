"""Graceful drain: requests accepted before `mfn undeploy` began are all answered, on both servers."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import mfn
from mfn.deploy import launching, local
from mfn.deploy.supervision import read_status
from tests.conftest import HANDLERS

pytestmark = pytest.mark.integration
IN_FLIGHT = 6  # three batches of two on a one-second model: the last is answered about 3 s after undeploy


@pytest.mark.parametrize("target", ["triton", "torchserve"])
def test_undeploy_answers_every_request_in_flight(target, tmp_path):
    mfn.package(f"{HANDLERS / 'slow.py'}:Slow", tmp_path, target=target)
    name = f"drain-{target}"
    deployment = local.deploy(tmp_path, name=name)
    sent = threading.Barrier(IN_FLIGHT + 1)

    def call(row: int) -> np.ndarray:
        with mfn.Client(name, timeout_s=60.0, retries=0) as client:
            client.endpoint("slow")
            sent.wait()
            return client.infer("slow", {"x": [[row, row]]})["y"]

    with ThreadPoolExecutor(IN_FLIGHT) as pool:
        futures = [pool.submit(call, row) for row in range(IN_FLIGHT)]
        sent.wait()
        time.sleep(1.0)  # let every request reach the server
        started = time.monotonic()
        local.undeploy(name)
        stopped_after_s = time.monotonic() - started
        answers = [future.result() for future in futures]
    assert [answer.tolist() for answer in answers] == [[[2.0 * row] * 2] for row in range(IN_FLIGHT)]
    assert stopped_after_s < deployment_drain_limit_s()
    assert read_status(deployment).state == "unknown"  # the work directory is gone with the deployment


def deployment_drain_limit_s() -> float:
    return launching.DRAIN_TIMEOUT_S + launching.STOP_GRACE_S
