"""The lines `mfn status` prints for one deployment: counts said as people say them, endpoints in one column."""

from __future__ import annotations

from mfn.local.deployments import describe
from mfn.local.state import Deployment, Prometheus
from mfn.local.supervision import ModelHealth, Status


def deployment(**fields: object) -> Deployment:
    return Deployment(name="demo", server="triton", pid=0, start_time=None, host="127.0.0.1",
                      ports={"http": 8000, "grpc": 8001, "metrics": 8002}, models=["m"], repository="/models",
                      log_file="server.log", workdir="/nowhere", **fields)


def test_one_wake_one_restart_and_one_reload_are_singular_and_the_wake_time_is_rounded():
    status = Status(state="running", restarts=1, wakes=1, last_wake_s=0.485, models={"m": ModelHealth(health="ready", reloads=1)})
    text = describe(deployment(), status)
    assert "1 restart, woken once (last in 0.5 s)" in text and "model m: ready, 1 reload" in text
    many = describe(deployment(), Status(restarts=3, wakes=12, last_wake_s=14.26, models={"m": ModelHealth(reloads=0)}))
    assert "3 restarts, woken 12 times (last in 14 s)" in many and "0 reloads" in many


def test_every_endpoint_url_starts_in_the_same_column_with_prometheus_among_them():
    text = describe(deployment(prometheus=Prometheus(pid=1, start_time=None, url="http://127.0.0.1:9090")), Status())
    rows = [line for line in text.splitlines()[1:] if not line.startswith("  model ")]
    assert [line.split()[0] for line in rows] == ["http", "grpc", "metrics", "prometheus"], text
    assert len({line.index(line.split()[-1]) for line in rows}) == 1, text
