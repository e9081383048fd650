"""The TorchServe pod's drain: reading activity from Prometheus text and waiting until it stops."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mfn.kubernetes import drain
from mfn.servers import drain as server_drain
from mfn.servers.process import free_ports

METRICS = """# HELP ts_inference_requests_total Total number of inference requests.
# TYPE ts_inference_requests_total counter
ts_inference_requests_total{model_name="a",model_version="default",hostname="pod",} 3.0
ts_inference_requests_total{model_name="b",model_version="default",hostname="pod",} 2.0 1700000000000
ts_inference_latency_microseconds{model_name="a",model_version="default",hostname="pod",} 1500.5
ts_queue_latency_microseconds{model_name="a",model_version="default",hostname="pod",} 99.0
Requests2XX 7.0
"""


def test_activity_sums_each_counter_over_its_label_sets():
    assert server_drain.activity(METRICS) == (5.0, 1500.5)
    assert server_drain.activity("") == (0.0, 0.0)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_waits_until_nothing_arrives_or_finishes_for_the_quiet_time():
    clock = FakeClock()
    readings = iter([(1.0, 10.0), (2.0, 10.0), (2.0, 20.0)])
    last = (2.0, 20.0)
    assert server_drain.wait_until_quiet(lambda: next(readings, last), timeout_s=30, quiet_s=2, clock=clock, sleep=clock.sleep)
    # The last change came on the second poll (1 s); quiet for 2 s after it.
    assert clock.now == pytest.approx(1.0 + 2.0)


def test_gives_up_when_the_server_stays_busy():
    clock = FakeClock()
    assert not server_drain.wait_until_quiet(lambda: (clock.now,), timeout_s=5, quiet_s=2, clock=clock, sleep=clock.sleep)
    assert clock.now == pytest.approx(5.0)


def test_a_server_that_no_longer_answers_has_nothing_to_drain():
    clock = FakeClock()
    assert server_drain.wait_until_quiet(lambda: None, timeout_s=30, quiet_s=2, clock=clock, sleep=clock.sleep)
    assert clock.now == 0.0


@pytest.fixture
def metrics_port() -> Iterator[int]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            body = METRICS.encode()
            self.send_response(200 if self.path == "/metrics" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_reads_the_metrics_port_and_returns_when_quiet(metrics_port, capsys):
    assert server_drain.metrics_reader(metrics_port)() == (5.0, 1500.5)
    (closed,) = free_ports(1)
    assert server_drain.metrics_reader(closed)() is None
    assert drain.main([f"--metrics-port={metrics_port}", "--timeout-s=10", "--quiet-s=0.6"]) == 0
    assert "mfn drain: quiet after" in capsys.readouterr().out


def test_the_quiet_window_outlasts_the_slowest_predict_seen():
    buckets = "\n".join(
        f'mfn_predict_duration_seconds_bucket{{Hostname="h",le="{le}",model="m",version="1"}} {count}'
        for le, count in [("0.5", 3), ("1.0", 3), ("2.5", 4), ("5.0", 5), ("10.0", 5), ("+Inf", 5)]
    )
    assert server_drain.slowest_predict_s(buckets) == 5.0
    assert server_drain.slowest_predict_s("") == 0.0
    beyond = 'mfn_predict_duration_seconds_bucket{le="10.0"} 1\nmfn_predict_duration_seconds_bucket{le="+Inf"} 2'
    assert server_drain.slowest_predict_s(beyond) == 20.0
