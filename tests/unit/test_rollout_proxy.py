"""The rollout proxy's nginx configuration (golden files, one per strategy, each accepted by the real `nginx -t`),
the routing checks, and the rollout analysis's window figures and rule."""

from __future__ import annotations

import subprocess

import pytest

from mfn.proxy import fronting, rollout
from mfn.proxy.nginx_config import Guard, ProxyConfig, Routing, Track, check_routing, render
from mfn.proxy.analysis import Figures, breach, totals, window
from mfn.proxy.routes import nginx_binary
from mfn.errors import MfnError
from tests.conftest import GOLDEN, assert_matches_golden

CASES = {
    "canary-25": ("triton", Routing("canary", 25)),
    "blue-green": ("torchserve", Routing("blue-green", 100)),
    "ab-header": ("triton", Routing("ab", 0, "X-Group", "beta")),
    "ab-sticky": ("torchserve", Routing("ab", 30, "X-User")),
    "shadow": ("triton", Routing("shadow")),
    "no-rollout": ("triton", Routing("canary", 0)),
}


# Where a packaged mfn and Debian's njs module would be; `nginx -t` gets the real ones.
GOLDEN_GUARD = Guard(module="/usr/lib/nginx/modules/ngx_http_js_module.so", script="/srv/mfn/proxy/guard.js")


def config(server: str, routing: Routing, directory: str = "/srv/mfn/route", guard: Guard | None = GOLDEN_GUARD) -> ProxyConfig:
    canary = None if routing.weight == 0 and routing.strategy == "canary" else Track("127.0.0.1:9103", "127.0.0.1:9104", "canary-key")
    return ProxyConfig(server=server, host="127.0.0.1", http_port=8000, grpc_port=8001, key="callers-key",
                       body_limit_bytes=64 << 20, directory=directory,
                       primary=Track("127.0.0.1:9101", "127.0.0.1:9102", "primary-key"), canary=canary, routing=routing,
                       guard=guard if server == "triton" else None)


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_strategy_renders_its_golden_configuration(case):
    server, routing = CASES[case]
    text = render(config(server, routing))
    assert_matches_golden(text, GOLDEN / "proxy" / f"{case}.nginx.conf")
    # Both of the primary's ports are upstreams, and the canary's exactly when a rollout has one.
    assert "127.0.0.1:9101" in text and "127.0.0.1:9102" in text
    assert ("127.0.0.1:9103" in text and "127.0.0.1:9104" in text) == (case != "no-rollout")


@pytest.mark.parametrize("case", sorted(CASES))
def test_nginx_itself_accepts_each_rendered_configuration(case, tmp_path):
    server, routing = CASES[case]
    (tmp_path / "temp").mkdir()
    conf = tmp_path / "nginx.conf"
    conf.write_text(render(config(server, routing, str(tmp_path), guard=fronting.guard())))
    checked = subprocess.run([nginx_binary(), "-t", "-p", str(tmp_path), "-c", str(conf)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


def test_a_deployment_without_keys_gets_an_open_proxy():
    text = render(ProxyConfig("torchserve", "127.0.0.1", 1, 2, None, 1, "/d", Track("a:1", "a:2", None), None, Routing("canary")))
    assert "$mfn_caller_ok_http { default 1; }" in text and "Bearer" not in text


@pytest.mark.parametrize("routing, message", [
    (Routing("rolling"), "strategy 'rolling'"),
    (Routing("canary", 101), "weight 101"),
    (Routing("canary", 12.345), "at most two decimals"),
    (Routing("blue-green", 50), "0 or 100"),
    (Routing("ab", 10), "needs a header name"),
    (Routing("ab", 0, "X-Group", 'be"ta'), "no quotes"),
    (Routing("ab", 0, "X Group", "beta"), "header 'X Group'"),
])
def test_routing_that_cannot_be_rendered_is_refused_naming_the_field(routing, message):
    with pytest.raises(ValueError, match=message):
        check_routing(routing, has_canary=True)


@pytest.mark.parametrize("kwargs, message", [
    ({"strategy": "canary", "steps": [5, 25, 50]}, "ending at 100"),
    ({"strategy": "canary", "steps": [25, 5, 100]}, "rising"),
    ({"strategy": "shadow", "steps": [50, 100]}, "canary only"),
    ({"strategy": "ab"}, "needs --header"),
    ({"strategy": "canary", "max_error_ratio": 2.0}, "--max-error-ratio"),
])
def test_a_rollout_plan_is_checked_before_anything_starts(kwargs, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        rollout.plan(path=tmp_path, name="models", **kwargs)


def test_a_long_name_leaves_no_room_for_the_canary_track():
    with pytest.raises(MfnError, match="too long for a rollout"):
        rollout.canary_name("m" * 60)


METRICS = """# TYPE mfn_requests_total counter
mfn_requests_total{{model="m",version="1",outcome="success"}} {ok}
mfn_requests_total{{model="m",version="1",outcome="error"}} {failed}
# TYPE mfn_predict_duration_seconds histogram
mfn_predict_duration_seconds_bucket{{model="m",version="1",le="0.001"}} {fast}
mfn_predict_duration_seconds_bucket{{model="m",version="1",le="0.1"}} {slow}
mfn_predict_duration_seconds_bucket{{model="m",version="1",le="+Inf"}} {slow}
mfn_predict_duration_seconds_count{{model="m",version="1"}} {slow}
mfn_predict_duration_seconds_sum{{model="m",version="1"}} 1.0
"""


def test_a_window_counts_only_what_happened_in_it():
    start = totals(METRICS.format(ok=100, failed=0, fast=100, slow=100))
    now = totals(METRICS.format(ok=110, failed=10, fast=100, slow=120))
    figures = window(start, now)
    assert (figures.requests, figures.errors, figures.error_ratio) == (20, 10, 0.5)
    assert 0.09 * 1000 < figures.p99_ms <= 100  # every request of the window took over a millisecond


def test_a_server_restarted_within_the_window_counts_from_zero():
    figures = window(totals(METRICS.format(ok=100, failed=5, fast=1, slow=1)), totals(METRICS.format(ok=3, failed=1, fast=1, slow=1)))
    assert (figures.requests, figures.errors) == (4, 1)


def test_the_rule_names_the_figure_the_canary_breaks_and_waits_for_enough_requests():
    primary = Figures(100, 0, 0.0, 2.0)
    assert breach(Figures(4, 4, 1.0, 2.0), primary, 0.1, None) is None  # too few to judge
    why = breach(Figures(20, 10, 0.5, 2.0), primary, 0.1, None)
    assert why.startswith("error ratio 0.500 on the canary (10 of 20 requests)") and "--max-error-ratio 0.1" in why
    assert "primary error ratio 0.000" in why
    assert "p99 250.0 ms on the canary" in breach(Figures(20, 0, 0.0, 250.0), primary, 0.1, 100.0)
    assert breach(Figures(20, 1, 0.05, 50.0), primary, 0.1, 100.0) is None
