"""Scrape config, alert rules and dashboard: golden files, and Prometheus's own promtool on the rules."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from mfn.monitoring import render
from tests.conftest import GOLDEN, assert_matches_golden

TARGETS = [render.ScrapeTarget("demo", "triton", "127.0.0.1:8002"), render.ScrapeTarget("demo-ts", "torchserve", "127.0.0.1:8082")]


def promtool(*args: str, cwd: Path) -> str:
    binary = shutil.which("promtool")
    assert binary, "promtool is missing: `make setup` installs Debian's prometheus package, which carries it"
    result = subprocess.run([binary, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    (tmp_path / "rules.yml").write_text(render.to_yaml(render.alert_rules()))
    return tmp_path


def test_rules_and_dashboard_match_golden_and_parse_back():
    rules_text = render.to_yaml(render.alert_rules())
    dashboard_text = render.to_json(render.dashboard())
    scrape_text = render.to_yaml(render.scrape_config(TARGETS, 15, ["rules.yml"]))
    assert_matches_golden(rules_text, GOLDEN / "monitoring" / "rules.yml")
    assert_matches_golden(dashboard_text, GOLDEN / "monitoring" / "dashboard.json")
    assert_matches_golden(scrape_text, GOLDEN / "monitoring" / "prometheus.yml")
    (group,) = yaml.safe_load(rules_text)["groups"]
    alerts = [rule for rule in group["rules"] if "alert" in rule]
    assert alerts and all(rule["expr"] and rule["labels"]["severity"] and rule["annotations"]["summary"] for rule in alerts)
    panels = json.loads(dashboard_text)["panels"]
    assert panels and all(target["expr"] for panel in panels for target in panel["targets"])
    scrape = yaml.safe_load(scrape_text)
    assert scrape["global"]["scrape_interval"] == "15s" and scrape["rule_files"] == ["rules.yml"]
    assert [(job["job_name"], job["static_configs"][0]["targets"], job["static_configs"][0]["labels"]["server"])
            for job in scrape["scrape_configs"]] == [
        (f"mfn-{target.deployment}", [target.address], target.server) for target in TARGETS]


def test_promtool_accepts_the_config_and_the_rules(rules_dir):
    (rules_dir / "prometheus.yml").write_text(render.to_yaml(render.scrape_config(TARGETS, 1, ["rules.yml"])))
    assert "SUCCESS" in promtool("check", "config", "prometheus.yml", cwd=rules_dir)
    assert "SUCCESS: 7 rules found" in promtool("check", "rules", "rules.yml", cwd=rules_dir)


def series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    rendered = ",".join(f'{key}="{value}"' for key, value in labels.items())
    return {"series": f"{name}{{{rendered}}}", "values": values}


M = {"model": "m", "version": "1"}


def test_promtool_unit_tests_fire_each_alert(rules_dir):
    queue_us = " ".join(str(60 * 1000 * minute * minute * 5) for minute in range(31))  # wait grows every minute
    tests = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    series("mfn_requests_total", {**M, "outcome": "success"}, "0+60x30"),
                    series("mfn_requests_total", {**M, "outcome": "error"}, "0+20x30"),
                    series("mfn_predict_duration_seconds_bucket", {**M, "le": "0.5"}, "0+1x30"),
                    series("mfn_predict_duration_seconds_bucket", {**M, "le": "1"}, "0+10x30"),
                    series("mfn_predict_duration_seconds_bucket", {**M, "le": "+Inf"}, "0+10x30"),
                    series("nv_inference_queue_duration_us", M, queue_us),
                    series("nv_inference_request_success", M, "0+60x30"),
                    series("up", {"job": "mfn-demo", "instance": "127.0.0.1:8002"}, "0x30"),
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "20m",
                        "alertname": "MfnHighErrorRate",
                        "exp_alerts": [{"exp_labels": {"severity": "critical", **M},
                                        "exp_annotations": {"summary": "m v1 fails 25% of requests"}}],
                    },
                    {
                        "eval_time": "20m",
                        "alertname": "MfnPredictLatencyHigh",
                        "exp_alerts": [{"exp_labels": {"severity": "warning", **M},
                                        "exp_annotations": {"summary": "m v1: p95 predict time 972.2ms"}}],
                    },
                    {
                        "eval_time": "25m",
                        "alertname": "MfnQueueTimeGrowing",
                        "exp_alerts": [{"exp_labels": {"severity": "warning", **M},
                                        "exp_annotations": {"summary": "m v1: requests wait 225ms in the queue, and rising"}}],
                    },
                    {
                        "eval_time": "5m",
                        "alertname": "MfnTargetDown",
                        "exp_alerts": [{"exp_labels": {"severity": "critical", "job": "mfn-demo", "instance": "127.0.0.1:8002"},
                                        "exp_annotations": {"summary": "mfn-demo at 127.0.0.1:8002 is down: its server is not serving metrics or models"}}],
                    },
                    {"eval_time": "3m", "alertname": "MfnHighErrorRate", "exp_alerts": []},
                ],
            },
            {
                "interval": "1m",
                "input_series": [
                    # An idle deployment asleep from minute 0 to 4 (its front answers the metrics port: up 1, with
                    # mfn_asleep 1), then waking with its metrics port closed, a wake that never ends; beside it a
                    # deployment that was never asleep and goes down at minute 5 too.
                    series("up", {"job": "mfn-idle", "instance": "127.0.0.1:8002"}, "1x4 0x20"),
                    series("mfn_asleep", {"job": "mfn-idle", "instance": "127.0.0.1:8002"}, "1x4 _x20"),
                    series("up", {"job": "mfn-busy", "instance": "127.0.0.1:9002"}, "1x4 0x20"),
                ],
                "alert_rule_test": [
                    {"eval_time": "4m", "alertname": "MfnTargetDown", "exp_alerts": []},
                    {
                        "eval_time": "8m",
                        "alertname": "MfnTargetDown",
                        "exp_alerts": [{"exp_labels": {"severity": "critical", "job": "mfn-busy", "instance": "127.0.0.1:9002"},
                                        "exp_annotations": {"summary": "mfn-busy at 127.0.0.1:9002 is down: its server is not serving metrics or models"}}],
                    },
                    {
                        "eval_time": "12m",
                        "alertname": "MfnTargetDown",
                        "exp_alerts": [
                            {"exp_labels": {"severity": "critical", "job": "mfn-idle", "instance": "127.0.0.1:8002"},
                             "exp_annotations": {"summary": "mfn-idle at 127.0.0.1:8002 is down: its server is not serving metrics or models"}},
                            {"exp_labels": {"severity": "critical", "job": "mfn-busy", "instance": "127.0.0.1:9002"},
                             "exp_annotations": {"summary": "mfn-busy at 127.0.0.1:9002 is down: its server is not serving metrics or models"}},
                        ],
                    },
                ],
            },
            {
                "interval": "1m",
                "input_series": [
                    # TorchServe labels requests without a version "default": the record keeps the model only.
                    series("ts_queue_latency_microseconds", {"model_name": "t", "model_version": "default"}, "0+6000000x10"),
                    series("ts_inference_requests_total", {"model_name": "t", "model_version": "default"}, "0+60x10"),
                ],
                "promql_expr_test": [
                    {"expr": "mfn:queue_seconds_per_request:rate5m", "eval_time": "8m",
                     "exp_samples": [{"labels": 'mfn:queue_seconds_per_request:rate5m{model="t"}', "value": 0.1}]},
                ],
            },
            {
                "interval": "1m",
                "input_series": [
                    # mfn's cache counter (TorchServe, or Redis anywhere) and Triton's own cache, for two models.
                    series("mfn_cache_requests_total", {**M, "result": "hit"}, "0+45x10"),
                    series("mfn_cache_requests_total", {**M, "result": "miss"}, "0+15x10"),
                    series("mfn_cache_requests_total", {**M, "result": "error"}, "0x10"),
                    series("nv_cache_num_hits_per_model", {"model": "n", "version": "2"}, "0+30x10"),
                    series("nv_cache_num_misses_per_model", {"model": "n", "version": "2"}, "0+30x10"),
                ],
                "promql_expr_test": [
                    {"expr": "mfn:cache_requests:rate5m", "eval_time": "8m",
                     "exp_samples": [
                         {"labels": 'mfn:cache_requests:rate5m{model="m", version="1", result="hit"}', "value": 0.75},
                         {"labels": 'mfn:cache_requests:rate5m{model="m", version="1", result="miss"}', "value": 0.25},
                         {"labels": 'mfn:cache_requests:rate5m{model="m", version="1", result="error"}', "value": 0},
                         {"labels": 'mfn:cache_requests:rate5m{model="n", version="2", result="hit"}', "value": 0.5},
                         {"labels": 'mfn:cache_requests:rate5m{model="n", version="2", result="miss"}', "value": 0.5},
                     ]},
                    {"expr": render.dashboard_expressions()[-1], "eval_time": "8m",
                     "exp_samples": [{"labels": '{model="m", version="1"}', "value": 0.75},
                                     {"labels": '{model="n", version="2"}', "value": 0.5}]},
                ],
            },
        ],
    }
    (rules_dir / "tests.yml").write_text(yaml.safe_dump(tests, sort_keys=False))
    assert "SUCCESS" in promtool("test", "rules", "tests.yml", cwd=rules_dir)


def test_dashboard_panels_filter_by_model_and_version():
    board = render.dashboard()
    expressions = [panel["targets"][0]["expr"] for panel in board["panels"]]
    assert all('model=~"$model"' in expr and 'version=~"$version"' in expr for expr in expressions)
    assert {variable["name"] for variable in board["templating"]["list"]} == {"datasource", "model", "version"}
    assert json.loads(render.to_json(board)) == board
