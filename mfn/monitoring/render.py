"""Render Prometheus scrape configs, alerting rules and a Grafana dashboard for mfn deployments."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from mfn.local.idle_metrics import ASLEEP_GAUGE
from mfn.monitoring import queries as q

JOB_PREFIX = "mfn-"


@dataclass(frozen=True)
class ScrapeTarget:
    """One server's metrics endpoint."""

    deployment: str
    server: str
    address: str


@dataclass(frozen=True)
class AlertThresholds:
    """When the alerts fire; each has a sensible default for online inference."""

    error_ratio: float = 0.05
    predict_p95_s: float = 0.5
    queue_s: float = 0.1
    for_duration: str = "5m"
    # How long after its last asleep scrape a target may stay unreachable before it counts as down: an idle
    # deployment's metrics port is closed while its server wakes, which lasts its models' load (at most the
    # default load timeout, 5 minutes).
    waking_grace: str = "5m"


def scrape_config(targets: list[ScrapeTarget], interval_s: int = 15, rule_files: list[str] | None = None) -> dict[str, Any]:
    """prometheus.yml: one job per deployment, labelled with the deployment and its server."""
    config: dict[str, Any] = {
        "global": {"scrape_interval": f"{interval_s}s", "evaluation_interval": f"{interval_s}s"},
        "scrape_configs": [
            {
                "job_name": f"{JOB_PREFIX}{target.deployment}",
                "metrics_path": "/metrics",
                "static_configs": [
                    {"targets": [target.address], "labels": {"deployment": target.deployment, "server": target.server}}
                ],
            }
            for target in targets
        ],
    }
    if rule_files:
        config["rule_files"] = rule_files
    return config


def alert_rules(thresholds: AlertThresholds = AlertThresholds(), job: str = f"{JOB_PREFIX}.*") -> dict[str, Any]:
    """Recording rules that unify the servers' queue and concurrency metrics, and the alerts on mfn's metrics.

    `job` is a regular expression for the scrape jobs of mfn's servers (the target-down alert watches them).
    """
    wait = thresholds.for_duration
    # One group: rules in a group run in order, so the alert on the queue time sees this evaluation's record.
    return {
        "groups": [
            {
                "name": "mfn",
                "rules": [
                    {"record": q.QUEUE_SECONDS_RECORD, "expr": f"({q.TRITON_QUEUE_SECONDS}) or ({q.TORCHSERVE_QUEUE_SECONDS})"},
                    {"record": q.CONCURRENCY_RECORD, "expr": q.CONCURRENCY},
                    {"record": q.CACHE_RECORD, "expr": q.CACHE_REQUESTS},
                    _alert(
                        "MfnHighErrorRate",
                        f"({q.window(q.ERROR_RATIO)}) > {thresholds.error_ratio}",
                        wait,
                        "critical",
                        "{{ $labels.model }} v{{ $labels.version }} fails {{ $value | humanizePercentage }} of requests",
                    ),
                    _alert(
                        "MfnPredictLatencyHigh",
                        f"({q.window(q.PREDICT_QUANTILE, quantile=0.95)}) > {thresholds.predict_p95_s}",
                        wait,
                        "warning",
                        "{{ $labels.model }} v{{ $labels.version }}: p95 predict time {{ $value | humanizeDuration }}",
                    ),
                    _alert(
                        "MfnQueueTimeGrowing",
                        f"{q.QUEUE_SECONDS_RECORD} > {thresholds.queue_s} and deriv({q.QUEUE_SECONDS_RECORD}[10m]) > 0",
                        wait,
                        "warning",
                        "{{ $labels.model }} v{{ $labels.version }}: requests wait {{ $value | humanizeDuration }} in the queue, and rising",
                    ),
                    _alert(
                        "MfnTargetDown",
                        # An asleep deployment answers its metrics port (with mfn_asleep 1): up stays 1. Only while
                        # it wakes is the port closed, which is not down either.
                        f'(up{{job=~"{job}"}} == 0) unless on (job, instance) '
                        f'(max_over_time({ASLEEP_GAUGE}{{job=~"{job}"}}[{thresholds.waking_grace}]) == 1)',
                        "1m",
                        "critical",
                        "{{ $labels.job }} at {{ $labels.instance }} is down: its server is not serving metrics or models",
                    ),
                ],
            },
        ]
    }


def _alert(name: str, expr: str, wait: str, severity: str, summary: str) -> dict[str, Any]:
    return {"alert": name, "expr": expr, "for": wait, "labels": {"severity": severity}, "annotations": {"summary": summary}}


PANELS = (
    ("Requests per second", "reqps", q.window(q.REQUEST_RATE), "{{model}} v{{version}} {{outcome}}"),
    ("Error ratio", "percentunit", q.window(q.ERROR_RATIO), "{{model}} v{{version}}"),
    ("Predict latency p50", "s", q.window(q.PREDICT_QUANTILE, quantile=0.5), "{{model}} v{{version}}"),
    ("Predict latency p95", "s", q.window(q.PREDICT_QUANTILE, quantile=0.95), "{{model}} v{{version}}"),
    ("Predict latency p99", "s", q.window(q.PREDICT_QUANTILE, quantile=0.99), "{{model}} v{{version}}"),
    ("Mean batch size", "short", q.window(q.MEAN_BATCH_SIZE), "{{model}} v{{version}}"),
    ("Queue time per request", "s", q.QUEUE_SECONDS_RECORD, "{{model}} v{{version}}"),
    # Streaming model functions only (the others have no such series).
    ("Time to first chunk p95", "s", q.window(q.FIRST_CHUNK_QUANTILE, quantile=0.95), "{{model}} v{{version}}"),
    ("Chunks per streamed request", "short", q.window(q.MEAN_CHUNKS), "{{model}} v{{version}}"),
    # Cached model functions only.
    ("Response cache hit ratio", "percentunit", q.window(q.CACHE_HIT_RATIO), "{{model}} v{{version}}"),
)


def dashboard_expressions() -> list[str]:
    """Every PromQL expression the dashboard runs, with its variables set to match all."""
    return [_select_all(expr) for _, _, expr, _ in PANELS]


def dashboard() -> dict[str, Any]:
    """A Grafana dashboard: one time-series panel per figure, filtered by model and version variables."""
    panels = []
    for index, (title, unit, expr, legend) in enumerate(PANELS):
        panels.append({
            "id": index + 1,
            "type": "timeseries",
            "title": title,
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "gridPos": {"h": 8, "w": 12, "x": 12 * (index % 2), "y": 8 * (index // 2)},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "targets": [{"refId": "A", "expr": _filtered(expr), "legendFormat": legend}],
        })
    return {
        "title": "mfn model functions",
        "uid": "mfn-overview",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "tags": ["mfn"],
        "templating": {"list": [
            {"name": "datasource", "type": "datasource", "query": "prometheus"},
            _variable("model", "label_values(mfn_requests_total, model)"),
            _variable("version", 'label_values(mfn_requests_total{model=~"$model"}, version)'),
        ]},
        "panels": panels,
    }


def _variable(name: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "type": "query",
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "query": query,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "refresh": 2,
    }


_SELECTORS = (
    ("mfn_requests_total[", 'mfn_requests_total{model=~"$model", version=~"$version"}['),
    ('mfn_requests_total{outcome="error"}', 'mfn_requests_total{outcome="error", model=~"$model", version=~"$version"}'),
    ("_bucket[", '_bucket{model=~"$model", version=~"$version"}['),
    ("_sum[", '_sum{model=~"$model", version=~"$version"}['),
    ("_count[", '_count{model=~"$model", version=~"$version"}['),
)


def _filtered(expr: str) -> str:
    if expr == q.QUEUE_SECONDS_RECORD:
        return f'{expr}{{model=~"$model", version=~"$version"}}'
    if q.CACHE_RECORD in expr:
        return expr.replace('result="hit"}', 'result="hit", model=~"$model", version=~"$version"}').replace(
            f"{q.CACHE_RECORD})", f'{q.CACHE_RECORD}{{model=~"$model", version=~"$version"}})')
    for plain, filtered in _SELECTORS:
        expr = expr.replace(plain, filtered)
    return expr


def _select_all(expr: str) -> str:
    return _filtered(expr).replace("$model", ".*").replace("$version", ".*")


def to_yaml(document: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(document, sort_keys=False, width=1_000_000)


def to_json(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2) + "\n"
