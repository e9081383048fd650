"""The chart's rollouts: every strategy on both engines renders, and every object validates offline against the
Kubernetes schemas or its CRD's (Gateway API HTTPRoute and GRPCRoute, Argo Rollouts Rollout and AnalysisTemplate);
the values `mfn rollout start --target kubernetes` writes; what the chart refuses, by name."""

from __future__ import annotations

import json

import kubernetes_validate
import pytest
from click.testing import CliRunner

from mfn.cli.main import cli
from mfn.kubernetes.helm import values_for
from mfn.kubernetes.rollout import abort_values, promote_values, rollout_values
from tests.k8s.test_chart import KUBERNETES_VERSIONS, helm, render, validate_custom_resource, chart_path

CUSTOM = {"HTTPRoute", "GRPCRoute", "Rollout", "AnalysisTemplate", "ServiceMonitor", "PrometheusRule", "ScaledObject"}
GATEWAY = ("gateways/inference",)


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    import mfn
    from tests.conftest import HANDLERS

    root = tmp_path_factory.mktemp("rollout-chart")
    for version in (1, 2):
        mfn.package(f"{HANDLERS / 'tracked.py'}:Tracked", root / f"v{version}", version=version)
    return root


def release_values(packages, tmp_path, **options) -> dict:
    """The release's values for v1, with the rollout of v2 merged in as `helm upgrade --reuse-values` would."""
    values = values_for(packages / "v1", "demo", "https://models.example.com/v1.tar.gz", None)
    new = rollout_values(packages / "v2", "demo", "https://models.example.com/v2.tar.gz", None, **options)
    merged = {**values, **new}
    path = tmp_path / "values.json"
    path.write_text(json.dumps(merged))
    return {**merged, "__file__": str(path)}


def validate(documents: list[dict]) -> None:
    for document in documents:
        if document["kind"] in CUSTOM:
            if document["kind"] == "GRPCRoute":  # the schema on hand is v1alpha2's, whose spec v1 kept as it was
                document = {**document, "apiVersion": "gateway.networking.k8s.io/v1alpha2"}
            validate_custom_resource(document)
            continue
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(document, version, strict=True)


def by_kind(documents: list[dict], kind: str) -> list[dict]:
    return [document for document in documents if document["kind"] == kind]


@pytest.mark.parametrize("strategy, options", [
    ("canary", {"weight": 25}),
    ("blue-green", {"weight": 100}),
    ("ab", {"header": "X-Group", "header_value": "beta"}),
    ("shadow", {"weight": 0}),
])
def test_each_strategy_renders_two_tracks_and_gateway_routes_that_validate(packages, tmp_path, strategy, options):
    documents = render(release_values(packages, tmp_path, strategy=strategy, gateways=GATEWAY, **options))
    validate(documents)
    deployments = {d["metadata"]["name"]: d for d in by_kind(documents, "Deployment")}
    assert set(deployments) == {"demo-mfn", "demo-canary-mfn"}
    fetch = {name: next(c for c in d["spec"]["template"]["spec"]["initContainers"] if c["name"] == "fetch-model")
             for name, d in deployments.items()}
    uris = {name: next(e["value"] for e in c["env"] if e["name"] == "MODEL_URI") for name, c in fetch.items()}
    assert uris == {"demo-mfn": "https://models.example.com/v1.tar.gz", "demo-canary-mfn": "https://models.example.com/v2.tar.gz"}
    # Both tracks use the release's one key, so callers need one whichever track answers.
    key_secrets = {name: {env["valueFrom"]["secretKeyRef"]["name"] for env in d["spec"]["template"]["spec"]["containers"][0]["env"]
                          if "secretKeyRef" in env.get("valueFrom", {})} for name, d in deployments.items()}
    assert key_secrets == {"demo-mfn": {"demo-mfn-keys"}, "demo-canary-mfn": {"demo-mfn-keys"}}
    assert [d["metadata"]["name"] for d in by_kind(documents, "Secret")] == ["demo-mfn-keys"]
    routes = {d["kind"]: d for d in documents if d["kind"] in ("HTTPRoute", "GRPCRoute")}
    assert set(routes) == {"HTTPRoute", "GRPCRoute"}
    for kind, route in routes.items():
        assert route["spec"]["parentRefs"] == [{"name": "inference", "namespace": "gateways"}]
        rules = route["spec"]["rules"]
        weights = {ref["name"]: ref["weight"] for rule in rules for ref in rule["backendRefs"]}
        tracks = {ref["filters"][0]["responseHeaderModifier"]["set"][0]["value"] for rule in rules for ref in rule["backendRefs"]}
        if strategy == "canary":
            assert weights == {"demo-mfn": 75, "demo-canary-mfn": 25} and tracks == {"primary", "canary"}
        elif strategy == "blue-green":
            assert weights == {"demo-mfn": 0, "demo-canary-mfn": 100}
        elif strategy == "ab":
            assert rules[0]["matches"] == [{"headers": [{"type": "Exact", "name": "X-Group", "value": "beta"}]}]
            assert rules[0]["backendRefs"][0]["name"] == "demo-canary-mfn" and rules[1]["backendRefs"][0]["name"] == "demo-mfn"
        else:
            assert weights == {"demo-mfn": 1}
            assert rules[0]["filters"] == [{"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "demo-canary-mfn",
                                            "port": 8000 if kind == "HTTPRoute" else 8001}}}]


def test_blue_green_without_a_gateway_switches_the_services_selector(packages, tmp_path):
    for weight, instance in ((0, "demo"), (100, "demo-canary")):
        documents = render(release_values(packages, tmp_path, strategy="blue-green", weight=weight))
        validate(documents)
        assert not by_kind(documents, "HTTPRoute")
        service = next(s for s in by_kind(documents, "Service") if s["metadata"]["name"] == "demo-mfn")
        assert service["spec"]["selector"]["app.kubernetes.io/instance"] == instance


@pytest.mark.parametrize("strategy", ["canary", "blue-green"])
def test_argo_renders_a_rollout_over_the_deployment_with_an_analysis_on_mfn_metrics(packages, tmp_path, strategy):
    documents = render(release_values(packages, tmp_path, strategy=strategy, gateways=GATEWAY, engine="argo",
                                      steps=[5, 25, 50, 100], step_interval_s=60, max_error_ratio=0.02, max_p99_ms=40))
    validate(documents)
    (deployment,) = by_kind(documents, "Deployment")
    assert deployment["spec"]["replicas"] == 0  # the Rollout runs the pods
    (rollout,) = by_kind(documents, "Rollout")
    assert rollout["spec"]["workloadRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "demo-mfn"}
    (template,) = by_kind(documents, "AnalysisTemplate")
    metrics = {metric["name"]: metric for metric in template["spec"]["metrics"]}
    assert set(metrics) == {"error-ratio", "p99-predict-ms"}
    assert "result[0] <= 0.02" in metrics["error-ratio"]["successCondition"]
    assert 'mfn_requests_total{namespace="serving", pod=~"demo-mfn-{{args.canary-hash}}-.*", outcome="error"}' in \
        metrics["error-ratio"]["provider"]["prometheus"]["query"]
    assert "mfn_predict_duration_seconds_bucket" in metrics["p99-predict-ms"]["provider"]["prometheus"]["query"]
    if strategy == "canary":
        canary = rollout["spec"]["strategy"]["canary"]
        assert canary["steps"] == [{"setWeight": 5}, {"pause": {"duration": "60s"}}, {"setWeight": 25},
                                   {"pause": {"duration": "60s"}}, {"setWeight": 50}, {"pause": {"duration": "60s"}}]
        assert canary["trafficRouting"]["plugins"]["argoproj-labs/gatewayAPI"]["httpRoutes"] == [{"name": "demo-mfn"}]
        assert {d["kind"] for d in documents} >= {"HTTPRoute", "GRPCRoute"}
    else:
        assert rollout["spec"]["strategy"]["blueGreen"]["activeService"] == "demo-mfn-stable"


@pytest.mark.parametrize("options, message", [
    ({"strategy": "canary"}, "needs rollout.gateway.enabled"),
    ({"strategy": "ab", "header": "X-User", "gateways": GATEWAY}, "rollout.header.value is empty"),
    ({"strategy": "shadow", "engine": "argo", "gateways": GATEWAY}, "use engine mfn for ab and shadow"),
])
def test_the_chart_refuses_what_it_cannot_route_naming_the_value(packages, tmp_path, options, message):
    values = release_values(packages, tmp_path, **options)
    result = helm("template", "demo", str(chart_path()), "--values", values["__file__"])
    assert result.returncode != 0 and message in result.stderr


def test_promote_and_abort_values_end_the_rollout(packages, tmp_path):
    values = release_values(packages, tmp_path, strategy="canary", gateways=GATEWAY)
    promoted = promote_values(values)
    assert promoted["models"]["uri"] == "https://models.example.com/v2.tar.gz"
    assert promoted["rollout"] == {"enabled": False, "canary": None} == abort_values()["rollout"]


def test_the_cli_prints_the_rollout_values_it_would_merge(packages):
    result = CliRunner().invoke(cli, ["rollout", "start", "demo", str(packages / "v2"), "--target", "kubernetes",
                                      "--model-uri", "https://models.example.com/v2.tar.gz", "--gateway", "inference",
                                      "--weight", "20", "--values-only"])
    assert result.exit_code == 0, result.output
    values = json.loads(result.output)["rollout"]
    assert values["weight"] == 20 and values["gateway"]["parentRefs"] == [{"name": "inference"}]
    assert values["canary"]["models"]["uri"] == "https://models.example.com/v2.tar.gz"
