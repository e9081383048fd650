"""Handler metrics on both servers, scraped by a real Prometheus started by `mfn deploy --prometheus`."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

import mfn
from mfn.cli.main import cli
from mfn.errors import InvokeError
from mfn.local import state
from mfn.monitoring.render import dashboard_expressions
from tests.conftest import HANDLERS, scrape, wait_for
from tests.integration.conftest import TEXT_STATS

pytestmark = pytest.mark.integration
FAULTY = f"{HANDLERS / 'faulty.py'}:Faulty"
STREAMER = f"{HANDLERS / 'streamer.py'}:Streamer"
COUNTED = f"{HANDLERS / 'counted.py'}:CountedFixed"  # with a local response cache: Triton's own on Triton
# counted: the same request twice, one answered from the cache (not a request the model ran).
SENT = {("text_stats", "success"): 7, ("faulty", "success"): 2, ("faulty", "error"): 3, ("streamer", "success"): 1,
        ("counted_fixed", "success"): 1}


def query(prometheus_url: str, expr: str) -> list[dict]:
    url = f"{prometheus_url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    with urllib.request.urlopen(url, timeout=10) as response:
        answer = json.load(response)
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def query_until(prometheus_url: str, expr: str, predicate, timeout_s: float = 45.0) -> list[dict]:
    """Prometheus's answer to `expr` once `predicate` accepts it (scrapes come every second, the first after a few)."""
    def accepted() -> tuple[list[dict]] | None:
        result = query(prometheus_url, expr)
        return (result,) if predicate(result) else None

    return wait_for(accepted, timeout_s, f"Prometheus's answer to {expr!r}", every_s=0.5)[0]


def send_known_traffic(name: str) -> None:
    # Both protocols: TorchServe records its queue and latency metrics for REST requests only.
    with mfn.Client(name, protocol="http") as client:
        for index in range(SENT[("text_stats", "success")]):
            client.infer("text_stats", {"text": [f"request {index}"]})
    with mfn.Client(name, protocol="grpc") as client:
        for _ in range(SENT[("faulty", "error")]):
            with pytest.raises(InvokeError, match="poisoned"):
                client.infer("faulty", {"x": [[-1.0, 0.0]]})
        for _ in range(SENT[("faulty", "success")]):
            client.infer("faulty", {"x": [[1.0, 2.0]]})
        assert len(list(client.stream("streamer", {"steps": [[3]], "delay_ms": [[0]]}))) == 3
        for _ in range(2):
            client.infer("counted_fixed", {"x": [[-1.0, -2.0]]})


@pytest.fixture(scope="module", params=["triton", "torchserve"])
def monitored(request, tmp_path_factory):
    server = request.param
    models = tmp_path_factory.mktemp(f"monitored-{server}")
    for ref in (TEXT_STATS, FAULTY, STREAMER, COUNTED):
        mfn.package(ref, models, server=server)
    name = f"monitored-{server}"
    result = CliRunner().invoke(cli, ["deploy", str(models), "--name", name, "--prometheus", "--json",
                                      "--drain-timeout", "0"])
    assert result.exit_code == 0, result.output
    deployment = state.get(name)
    prometheus_url = json.loads(result.output)["endpoints"]["prometheus"]
    up = query_until(prometheus_url, "up", lambda r: r and r[0]["value"][1] == "1")
    assert up and up[0]["metric"]["job"] == f"mfn-{name}", up
    send_known_traffic(name)
    yield server, deployment, prometheus_url
    prometheus_pid = deployment.prometheus.pid
    assert CliRunner().invoke(cli, ["undeploy", name]).exit_code == 0
    wait_for(lambda: not Path(f"/proc/{prometheus_pid}").exists(), 10, "undeploy to stop Prometheus")


def test_prometheus_holds_the_mfn_series_with_exact_counts_and_labels(monitored):
    server, deployment, prometheus_url = monitored
    # Every outcome's series is there, at 0 where nothing was sent with it.
    expected = {(model, outcome): float(SENT.get((model, outcome), 0))
                for model in ("text_stats", "faulty", "counted_fixed") for outcome in ("success", "invalid", "error")}
    expected.update({("streamer", outcome): float(SENT.get(("streamer", outcome), 0))
                     for outcome in ("success", "invalid", "error", "cancelled")})

    def counts(result):
        return {(r["metric"]["model"], r["metric"]["outcome"]): float(r["value"][1]) for r in result}

    result = query_until(prometheus_url, "mfn_requests_total", lambda r: counts(r) == expected)
    assert counts(result) == expected
    for series in result:
        labels = series["metric"]
        assert labels["version"] == "1"
        assert (labels["deployment"], labels["server"], labels["job"]) == (deployment.name, server, f"mfn-{deployment.name}")
    # One request at a time: every predict call saw one row, so the le=1 bucket holds them all.
    calls = 'mfn_batch_size_count{model="text_stats"}'
    batches = query_until(prometheus_url, calls, lambda r: r and float(r[0]["value"][1]) == 7.0)
    assert batches and float(batches[0]["value"][1]) == 7.0
    single = query(prometheus_url, 'mfn_batch_size_bucket{model="text_stats", le=~"1|1[.]0"}')
    assert [float(series["value"][1]) for series in single] == [7.0]
    assert query(prometheus_url, 'mfn_predict_duration_seconds_count{model="faulty"}')


def test_a_handlers_own_metric_reaches_prometheus_with_model_labels(monitored):
    _, _, prometheus_url = monitored
    result = query_until(prometheus_url, "faulty_poisoned_batches_total", lambda r: r and float(r[0]["value"][1]) == 3.0)
    assert result, "the handler's ctx.metrics counter never reached Prometheus"
    (series,) = result
    assert float(series["value"][1]) == 3.0
    assert (series["metric"]["model"], series["metric"]["version"]) == ("faulty", "1")


def test_prometheus_also_holds_the_servers_own_metrics(monitored):
    server, _, prometheus_url = monitored
    if server == "triton":
        expr, label = 'nv_inference_request_success{model="text_stats"}', "model"
    else:
        expr, label = 'ts_inference_requests_total{model_name="text_stats"}', "model_name"
    result = query_until(prometheus_url, expr, lambda r: r and float(r[0]["value"][1]) == 7.0)
    assert result and result[0]["metric"][label] == "text_stats" and float(result[0]["value"][1]) == 7.0


def test_every_dashboard_expression_parses_and_returns_data(monitored):
    _, _, prometheus_url = monitored
    for expr in dashboard_expressions():
        result = query_until(prometheus_url, expr, bool, timeout_s=30)
        assert result, f"no data for dashboard query: {expr}"


def test_the_metrics_endpoint_parses_and_mfn_stats_summarises_it(monitored):
    _, deployment, _ = monitored
    # Triton's adapter applies metric updates once a second (later on a busy machine): give the last ones time to land.
    expected = {f"{histogram}_{part}" for histogram in ("mfn_batch_size", "mfn_predict_duration_seconds")
                for part in ("bucket", "sum", "count")} | {"mfn_requests"}

    def exposed() -> set[str]:
        return {name.removesuffix("_total") for name, _, _ in scrape(deployment.metrics_url)}

    try:
        wait_for(lambda: expected <= exposed(), 30, "mfn's histograms and counters on the metrics page")
    except AssertionError as timeout:
        raise AssertionError(f"{timeout}: missing {sorted(expected - exposed())}") from None

    def landed() -> dict | None:
        result = CliRunner().invoke(cli, ["stats", deployment.name, "--json"])
        assert result.exit_code == 0, result.output
        rows = {row["model"]: row for row in json.loads(result.output)}
        # Each model's counts land on their own (TorchServe: each worker's flush): wait for every one of them.
        complete = (rows.get("faulty", {}).get("requests") == 5 and rows.get("text_stats", {}).get("requests") == 7
                    and rows.get("counted_fixed", {}).get("cache", {}).get("hit")
                    and rows.get("streamer", {}).get("mean_chunks") is not None)
        return rows if complete else None

    rows = wait_for(landed, 30, "mfn stats to count every request sent", every_s=0.2)
    assert rows["text_stats"]["requests"] == 7 and rows["text_stats"]["error_rate"] == 0.0
    assert rows["faulty"]["outcomes"] == {"error": 3, "invalid": 0, "success": 2}
    assert rows["faulty"]["error_rate"] == pytest.approx(0.6)
    assert rows["text_stats"]["mean_batch_size"] == 1.0
    assert rows["text_stats"]["predict_p95_s"] is not None and rows["text_stats"]["queue_mean_s"] is not None
    # text_stats predicts in tens of microseconds: the buckets below 0.5 ms resolve it (the lowest used to give 0.25 ms).
    assert rows["text_stats"]["predict_p50_s"] < 0.00025
    assert rows["streamer"]["mean_chunks"] == 3.0 and rows["streamer"]["first_chunk_p50_s"] is not None
    assert rows["text_stats"]["mean_chunks"] is None
    # Triton's own response cache on Triton, mfn's LRU on TorchServe: the same figures either way.
    assert rows["counted_fixed"]["cache"] == {"hit": 1, "miss": 1} | ({"error": 0} if deployment.server == "torchserve" else {})
    assert rows["counted_fixed"]["cache_hit_ratio"] == 0.5 and rows["text_stats"]["cache_hit_ratio"] is None
    human = CliRunner().invoke(cli, ["stats", deployment.name])
    assert "text_stats" in human.output and "60.0%" in human.output and "1st chunk p50" in human.output
    assert "cache hits" in human.output and "50.0%" in human.output


def test_monitor_writes_config_rules_and_dashboard_for_another_prometheus(monitored, tmp_path):
    _, deployment, _ = monitored
    result = CliRunner().invoke(cli, ["monitor", deployment.name, "--output", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dashboard.json", "prometheus.yml", "rules.yml"]
    assert f"127.0.0.1:{deployment.ports['metrics']}" in (tmp_path / "prometheus.yml").read_text()
