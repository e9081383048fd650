"""A poisoned request fails alone: concurrent mixed traffic on both servers, every clean request answered."""

from __future__ import annotations

import re
import threading
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import mfn
from mfn.errors import InvokeError
from tests.conftest import scrape, wait_for
from tests.handlers.poisonable import MARKER

pytestmark = pytest.mark.integration

REQUESTS = 160
CONCURRENCY = 16
POISONED = set(range(5, REQUESTS, 10))  # 10% of the requests


def metric_total(deployment, name: str) -> float:
    return sum(value for sample, labels, value in scrape(deployment.metrics_url)
               if sample == name and labels.get("model") == "poisonable")


def wait_for_increase(deployment, name: str, before: float) -> float:
    """The metric's new total; Triton's stub flushes mfn metrics once a second, so allow a few."""
    return wait_for(lambda: (total := metric_total(deployment, name)) > before and total, 10, f"{name} to grow")


def send_mixed_traffic(deployment_name: str, protocol: str) -> dict[int, object]:
    """Send REQUESTS one-row requests from CONCURRENCY threads; return each answer or error by request id."""
    local = threading.local()

    def send(request_id: int) -> object:
        if not hasattr(local, "client"):
            local.client = mfn.Client(deployment_name, protocol=protocol)
        first = MARKER if request_id in POISONED else 1.0
        row = np.array([[first, request_id, 2.0, 3.0]], dtype=np.float32)
        try:
            return local.client.infer("poisonable", {"x": row})["y"]
        except InvokeError as error:
            return error

    with ThreadPoolExecutor(CONCURRENCY) as pool:
        return dict(zip(range(REQUESTS), pool.map(send, range(REQUESTS))))


def check_isolated(answers: dict[int, object]) -> None:
    for request_id, answer in answers.items():
        if request_id in POISONED:
            assert isinstance(answer, InvokeError), f"poisoned request {request_id} was answered"
            assert f"row {request_id} is poisoned" in str(answer), f"request {request_id} got another's reason: {answer}"
        else:
            assert not isinstance(answer, Exception), f"clean request {request_id} failed: {answer}"
            np.testing.assert_array_equal(answer, [[2.0, request_id * 2.0, 4.0, 6.0]])


SERVERS = {"triton": "deployment", "torchserve": "torchserve_deployment"}
CASES = [(server, protocol) for server in SERVERS for protocol in ("http", "grpc")]


@pytest.mark.parametrize(("server", "protocol"), CASES)
def test_poisoned_requests_fail_alone(request, server, protocol):
    deployment = request.getfixturevalue(SERVERS[server])
    isolations_before = metric_total(deployment, "mfn_isolation_predicts_total")
    check_isolated(send_mixed_traffic(deployment.name, protocol))
    # The poisoned requests did share batches with clean ones: isolation had work to do.
    assert wait_for_increase(deployment, "mfn_isolation_predicts_total", isolations_before) > isolations_before


@pytest.mark.parametrize(("server", "protocol"), CASES)
def test_a_handler_exception_is_answered_with_its_reason_and_the_next_request_succeeds(request, server, protocol):
    deployment = request.getfixturevalue(SERVERS[server])
    with mfn.Client(deployment.name, protocol=protocol) as client:
        with pytest.raises(InvokeError, match="predict failed: ValueError: poisoned row in batch"):
            client.infer("faulty", {"x": [[1.0, -1.0]]})
        assert client.infer("faulty", {"x": [[1.0, 2.0]]})["y"].tolist() == [[2.0, 4.0]]


@pytest.mark.parametrize("server", SERVERS)
def test_the_server_log_holds_the_handlers_own_lines_and_each_failure_with_its_traceback(request, server):
    deployment = request.getfixturevalue(SERVERS[server])
    with mfn.Client(deployment.name) as client, pytest.raises(InvokeError):
        client.infer("faulty", {"x": [[3.0, -1.0]]})
    wanted = ["faulty v1 set up on cpu",  # ctx.logger.info in setup
              "faulty v1 request ", "predict failed: ValueError: poisoned row in batch", "Traceback (most recent call last)",
              # The handler's own frame (Triton's log escapes the quotes in the source line, so not that).
              "in predict"]

    def log_with_every_line() -> str | None:
        text = Path(deployment.log_file).read_text(errors="replace")
        return text if all(line in text for line in wanted) else None

    text = wait_for(log_with_every_line, 10, f"every one of {wanted} in {deployment.log_file}", every_s=0.2)
    # Each failure names its request: TorchServe's own id, and on Triton the id mfn.Client sends with each request.
    ids = re.findall(r"faulty v1 request (\S+): ", text)
    assert ids and "-" not in ids and (server == "torchserve" or all(i.startswith("mfn-") for i in ids)), ids
    # Each failure's traceback appears once, from the handler's frames on: not chained to mfn's own failure (a
    # request isolated from a failed batch, as in test_poisoned_requests_fail_alone, ran predict twice), and
    # without mfn's frames that led to predict.
    lines = text.splitlines()
    for model, reason in (("faulty", "ValueError: poisoned row in batch"), ("poisonable", "ValueError: row ")):
        failures = sum(f"{model} v1 request " in line for line in lines)
        last_lines = sum(reason in line and "predict failed" not in line for line in lines)
        assert last_lines <= failures, f"{model}: {last_lines} tracebacks for {failures} failures in {deployment.log_file}"
    assert "RequestFailure" not in text and "direct cause" not in text and "During handling" not in text
    assert "mfn/runtime/loop.py" not in text


@pytest.mark.parametrize(("server", "protocol"), CASES)
def test_a_wrong_shape_gets_the_same_words_on_both_servers(request, server, protocol):
    """Triton's own check would answer first, naming its internals; mfn.Client checks against the model's
    metadata before sending, in the words TorchServe's adapter uses."""
    deployment = request.getfixturevalue(SERVERS[server])
    with mfn.Client(deployment.name, protocol=protocol) as client, pytest.raises(InvokeError) as caught:
        client.infer("mlp", {"features": np.ones((1, 5))})
    assert "mlp" in str(caught.value) and "input 'features' has shape [1, 5], declared [batch, 4]" in str(caught.value)
    assert "max_batch_size" not in str(caught.value)
