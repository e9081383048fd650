"""TorchServe's drain, locally and in a pod: its accounts read from Prometheus text, and the wait until they balance."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mfn.kubernetes import drain
from mfn.servers import drain as server_drain
from mfn.servers.process import free_ports

RECEIVED_5 = """# TYPE ts_inference_requests_total counter
ts_inference_requests_total{model_name="a",model_version="default",hostname="pod",} 3.0
ts_inference_requests_total{model_name="b",model_version="default",hostname="pod",} 2.0 1700000000000
ts_inference_latency_microseconds{model_name="a",model_version="default",hostname="pod",} 1500.5
Requests2XX 7.0
"""


def page(answered: float, cache_hits: float = 0.0, in_model_s: float = 0.0) -> str:
    """A metrics page with 5 requests received and mfn's counts as TorchServe's frontend re-exposes them."""
    return RECEIVED_5 + (
        f'mfn_requests_total{{model="a",version="1",outcome="success",}} {answered}\n'
        f'mfn_cache_requests_total{{model="a",version="1",result="hit",}} {cache_hits}\n'
        f'mfn_cache_requests_total{{model="a",version="1",result="miss",}} 9.0\n'
        f'mfn_inflight_request_seconds{{model="a",version="1",}} {in_model_s}\n'
    )


class MetricsPage:
    """A metrics port whose page a test changes while the drain reads it."""

    def __init__(self, text: str) -> None:
        self.text = text
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                body = owner.text.encode()
                self.send_response(200 if self.path == "/metrics" else 404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/metrics"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def metrics() -> Iterator[MetricsPage]:
    served = MetricsPage(page(answered=5))
    yield served
    served.close()


def test_the_accounts_count_requests_received_and_answered_by_a_handler_or_its_cache(metrics):
    metrics.text = page(answered=3, cache_hits=1, in_model_s=2.5)
    assert server_drain.read_accounts(metrics.url) == server_drain.Accounts(received=5, answered=4, in_model_seconds=2.5)
    (closed,) = free_ports(1)
    assert server_drain.read_accounts(f"http://127.0.0.1:{closed}/metrics") is None


def test_balanced_accounts_end_the_wait_at_once(metrics):
    assert server_drain.wait_until_answered(metrics.url, lambda: None, timeout_s=10) == 0


def test_the_wait_lasts_while_requests_are_in_a_models_hands_and_ends_when_they_are_answered(metrics):
    metrics.text = page(answered=4, in_model_s=1.0)
    seconds = [1.0]

    def later() -> None:  # the model holds the last request for a while: its in-model time grows, then it answers
        for _ in range(4):
            threading.Event().wait(0.8)
            seconds[0] += 0.8
            metrics.text = page(answered=4, in_model_s=seconds[0])
        metrics.text = page(answered=5, in_model_s=seconds[0])

    thread = threading.Thread(target=later)
    thread.start()
    assert server_drain.wait_until_answered(metrics.url, lambda: None, timeout_s=30) == 0
    seen_at_the_end = metrics.text
    thread.join()
    assert seen_at_the_end == page(answered=5, in_model_s=seconds[0])  # it waited for the answer, not for a pause


def test_requests_torchserve_failed_itself_end_the_wait_at_a_standstill_not_the_timeout(metrics):
    metrics.text = page(answered=3)  # two requests whose worker died: never answered by mfn
    assert server_drain.wait_until_answered(metrics.url, lambda: None, timeout_s=30) == 0


def test_what_is_unanswered_when_the_timeout_runs_out_is_reported(metrics):
    stop = threading.Event()

    def busy() -> None:  # two requests in a model's hands past the timeout
        seconds = 1.0
        while not stop.wait(0.2):
            seconds += 0.2
            metrics.text = page(answered=3, in_model_s=seconds)

    thread = threading.Thread(target=busy)
    thread.start()
    try:
        assert server_drain.wait_until_answered(metrics.url, lambda: None, timeout_s=1.5) == 2
    finally:
        stop.set()
        thread.join()


def test_a_server_that_has_exited_has_nothing_left_to_drain(metrics):
    metrics.text = page(answered=0)
    assert server_drain.wait_until_answered(metrics.url, lambda: 0, timeout_s=30) == 0


def test_the_pods_hook_reports_what_it_waited_for(metrics, capsys):
    assert drain.main([f"--metrics-port={metrics.port}", "--timeout-s=10"]) == 0
    assert "mfn drain: every accepted request answered after" in capsys.readouterr().out
    (closed,) = free_ports(1)  # the server has gone: nothing to wait for
    assert drain.main([f"--metrics-port={closed}", "--timeout-s=10"]) == 0
    assert "every accepted request answered" in capsys.readouterr().out
