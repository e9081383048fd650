"""Rollouts on both real servers through the real nginx proxy, HTTP and gRPC: a canary's share, promote, abort
with requests in flight, automatic rollback of a broken release, blue-green under load, shadow, A/B.

The handler answers with its package's version (tests/handlers/tracked.py): v1 is the primary, v2 the new
release, v3 a release that fails every request.
"""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from click.testing import CliRunner

import mfn
from mfn.cli.main import cli
from mfn.local import deployments, state
from mfn.proxy import rollout, routes
from mfn.local.launching import DRAIN_TIMEOUT_S
from mfn.errors import MfnError
from tests.conftest import HANDLERS, scrape, wait_for
from tests.handlers.tracked import HANG_S

TRACKED = f"{HANDLERS / 'tracked.py'}:Tracked"
SERVERS = ("triton", "torchserve")
# 200 requests, each to the canary with probability p = 0.25: the count's standard deviation is
# sqrt(200 * 0.25 * 0.75) = 6.12; the test accepts 50 ± 4.5 of them (± 28), failing a correct split about once
# in 150,000 runs and telling a quarter from a tenth or a half.
CANARY_REQUESTS, CANARY_BOUND = 200, 28
# Each load thread's pause between requests: a few hundred requests a second over four threads (about 260 on
# TorchServe while its tracks start), not as many as the machine can make, which starves the starts it waits for.
LOAD_PAUSE_S = 0.003


@pytest.fixture(scope="module")
def packages(tmp_path_factory) -> dict[tuple[str, int], Path]:
    root = tmp_path_factory.mktemp("tracked")
    packaged = {}
    for server in SERVERS:
        for version in (1, 2, 3):
            output = root / f"{server}-v{version}"
            mfn.package(TRACKED, output, server=server, version=version)
            packaged[server, version] = output
    return packaged


@pytest.fixture(params=SERVERS)
def primary(request, packages):
    """Deployment `ro-<server>` serving v1, and each track started from it, with no drain: nothing is in flight
    when they stop. Undeployed with its route and any canary track left."""
    yield from _primary(request.param, packages, drain_timeout_s=0)


@pytest.fixture(params=SERVERS)
def draining_primary(request, packages):
    """`primary` with the default drain, for tests that stop a track with requests in flight."""
    yield from _primary(request.param, packages, drain_timeout_s=DRAIN_TIMEOUT_S)


def _primary(server: str, packages, drain_timeout_s: float):
    name = f"ro-{server}"
    deployments.deploy(packages[server, 1], name=name, drain_timeout_s=drain_timeout_s)
    try:
        yield server, name
    finally:
        deployments.undeploy(name)
        assert state.load(rollout.canary_name(name)) is None and routes.load(name) is None


def served_by(name: str, protocol: str = "http", x: int = -1, client: mfn.Client | None = None) -> int:
    if client is not None:
        return int(client.infer("tracked", {"x": [[x]]})["served_by"].item())
    with mfn.Client(name, protocol=protocol) as fresh:
        return served_by(name, protocol, x, fresh)


def counts(name: str, protocol: str, requests: int) -> Counter:
    with mfn.Client(name, protocol=protocol) as client:
        return Counter(served_by(name, client=client) for _ in range(requests))


def stock_http(server: str, name: str, headers: dict[str, str] | None = None, padding: int = 0) -> tuple[int, str | None]:
    """One request through the proxy with http.client: the version that answered, and the X-Mfn-Track header."""
    route = routes.load(name)
    path, body = (("/v2/models/tracked/infer",
                   {"inputs": [{"name": "x", "shape": [1, 1], "datatype": "INT32", "data": [-1]}]})
                  if server == "triton" else ("/predictions/tracked", {"x": [[-1]]}))
    connection = http.client.HTTPConnection(route.host, route.ports["http"], timeout=60)
    try:
        connection.request("POST", path, json.dumps(body) + " " * padding, {"Content-Type": "application/json",
                                                             "Authorization": f"Bearer {routes.callers_key(route)}",
                                                             **(headers or {})})
        response = connection.getresponse()
        answer = json.loads(response.read())
        assert response.status == 200, answer
    finally:
        connection.close()
    version = answer["outputs"][0]["data"][0] if server == "triton" else answer["served_by"][0][0]
    return int(version), response.getheader("X-Mfn-Track")


def stock_grpc(server: str, name: str, scratch: Path) -> tuple[int, str | None]:
    """One request through the proxy with grpcio: the version that answered, and the x-mfn-track metadata."""
    import grpc
    import numpy as np

    route = routes.load(name)
    with grpc.insecure_channel(f"{route.host}:{route.ports['grpc']}") as channel:
        if server == "triton":
            from tritonclient.grpc import service_pb2

            infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                                        request_serializer=service_pb2.ModelInferRequest.SerializeToString,
                                        response_deserializer=service_pb2.ModelInferResponse.FromString)
            request = service_pb2.ModelInferRequest(model_name="tracked", inputs=[service_pb2.ModelInferRequest.InferInputTensor(
                name="x", datatype="INT32", shape=[1, 1], contents=service_pb2.InferTensorContents(int_contents=[-1]))])
            answer, call = infer.with_call(request, timeout=60, metadata=[
                ("triton-grpc-protocol-authorization", f"Bearer {routes.callers_key(route)}")])
            version = int(np.frombuffer(answer.raw_output_contents[0], dtype=np.int32)[0])
        else:
            from mfn.client.torchserve_wire import SERVICE, message_classes

            request_type, response_type = message_classes(scratch)
            predict = channel.unary_unary(f"/{SERVICE}/Predictions", request_serializer=request_type.SerializeToString,
                                          response_deserializer=response_type.FromString)
            answer, call = predict.with_call(request_type(model_name="tracked", input={"data": b'{"x": [[-1]]}'}),
                                             timeout=60, metadata=[("authorization", f"Bearer {routes.callers_key(route)}")])
            version = int(json.loads(answer.prediction)["served_by"][0][0])
    return version, dict(call.initial_metadata()).get("x-mfn-track")


def test_a_25_percent_canary_sends_a_quarter_and_promote_moves_all_traffic_for_good(primary, packages, tmp_path):
    server, name = primary
    started = rollout.start(name, rollout.plan("canary", packages[server, 2], name, weight=25))
    assert started.rollout.weight == 25 and state.load(rollout.canary_name(name)).running
    for protocol in ("http", "grpc"):
        seen = counts(name, protocol, CANARY_REQUESTS)
        assert set(seen) == {1, 2}, seen
        assert abs(seen[2] - CANARY_REQUESTS * 0.25) <= CANARY_BOUND, (protocol, seen)
    # Every answer names the track that produced it.
    for protocol, call in (("http", lambda: stock_http(server, name)), ("grpc", lambda: stock_grpc(server, name, tmp_path))):
        # 40 calls: all 40 on the primary at a quarter's split happens once in 10^5 (0.75^40).
        tracks = Counter(call() for _ in range(40))
        assert set(tracks) <= {(1, "primary"), (2, "canary")} and len(tracks) == 2, (protocol, tracks)
    endpoints = rollout.status(name)["endpoints"]
    rollout.promote(name)
    assert rollout.status(name)["endpoints"] == endpoints
    for protocol in ("http", "grpc"):
        assert counts(name, protocol, 50) == Counter({2: 50})
    assert state.load(rollout.canary_name(name)) is None
    assert routes.load(name).rollout.state == "promoted"


def test_abort_answers_the_requests_in_flight_and_sends_all_traffic_back(draining_primary, packages):
    server, name = draining_primary
    rollout.start(name, rollout.plan("canary", packages[server, 2], name, weight=100))
    assert counts(name, "http", 10) == Counter({2: 10})
    before = received(server, rollout.canary_name(name))
    with ThreadPoolExecutor(6) as pool:
        in_flight = [pool.submit(served_by, name, protocol, 1500) for protocol in ("http", "grpc") * 3]
        # The abort comes once the canary has all six (each takes 1.5 s, so none has finished yet).
        wait_for(lambda: received(server, rollout.canary_name(name)) - before >= 6, 30, "six requests at the canary")
        rollout.abort(name)
        assert [future.result() for future in in_flight] == [2] * 6
    for protocol in ("http", "grpc"):
        assert counts(name, protocol, 30) == Counter({1: 30})
    report = rollout.status(name)
    assert report["rollout"]["state"] == "rolled back" and report["rollout"]["why"] == "aborted by the operator"
    assert state.load(rollout.canary_name(name)) is None


def received(server: str, deployment_name: str) -> float:
    """Requests the deployment has received, as its metrics show them: TorchServe counts each on arrival; on Triton,
    those not finished yet are queued or in a model's hands."""
    names = ("ts_inference_requests_total",) if server == "torchserve" else \
        ("nv_inference_pending_request_count", "mfn_inflight_requests")
    try:
        samples = scrape(state.get(deployment_name).metrics_url)
    except OSError:
        return 0.0
    return sum(value for name, _, value in samples if name in names)


def test_a_release_that_fails_every_request_is_rolled_back_by_itself(primary, packages):
    server, name = primary
    interval_s = 3.0
    rollout.start(name, rollout.plan("canary", packages[server, 3], name, steps=[20, 100],
                                     step_interval_s=interval_s, max_error_ratio=0.1))
    started = time.monotonic()
    outcomes: list[bool] = []
    with mfn.Client(name, retries=0) as client:
        while routes.load(name).rollout.state == "progressing":
            assert time.monotonic() - started < 2 * interval_s, "not rolled back within two step intervals"
            try:
                served_by(name, client=client)
                outcomes.append(True)
            except MfnError:
                outcomes.append(False)
        report = rollout.status(name)["rollout"]
        assert report["state"] == "rolled back" and "error ratio" in report["why"], report
        # Failures bounded by the first step's weight (20%, with five standard deviations of the sample's spread).
        failed = outcomes.count(False)
        assert failed, "no request reached the broken release"
        spread = 5 * (0.2 * 0.8 / len(outcomes)) ** 0.5
        assert failed / len(outcomes) <= 0.2 + spread, (failed, len(outcomes))
    assert counts(name, "http", 50) == Counter({1: 50})
    wait_for(lambda: state.load(rollout.canary_name(name)) is None, 60, "the broken track stopped")
    # The window the controller compared while both tracks served is gone with the rollout: status says how it ended.
    assert rollout.status(name)["rollout"]["analysis"] == {}
    shown = CliRunner().invoke(cli, ["rollout", "status", name])
    assert shown.exit_code == 0 and ": rolled back (" in shown.output and "all traffic on the primary" in shown.output
    assert not re.search(r"last [\d.]+ s, (primary|canary)", shown.output)
    assert f"canary ({rollout.canary_name(name)})" not in shown.output


# Routing rules are nginx's and the same for either server behind it: blue-green, shadow and A/B are checked on Triton
# alone, the cheaper to start. Each server's own part (its paths, keys, metrics, drain) is checked on both by the
# canary's start and promotion, the abort with requests in flight, the automatic rollback and the restarted track.
@pytest.mark.parametrize("draining_primary", ["triton"], indirect=True)
def test_blue_green_switches_and_promotes_under_load_without_a_failed_request(draining_primary, packages):
    server, name = draining_primary
    # The first rollout puts the proxy in front (the endpoints move once); the load starts on the proxy's.
    rollout.start(name, rollout.plan("canary", packages[server, 1], name, weight=0))
    rollout.abort(name)
    failures, answers, stop = [], Counter(), threading.Event()

    def load(protocol: str) -> None:
        # mfn.Client's own retries stay on: an HTTP/1.1 connection kept alive to an nginx worker that is handing
        # over may be closed just as a request is sent on it, unread; the client sends it again (gRPC gets GOAWAY).
        with mfn.Client(name, protocol=protocol) as client:
            while not stop.wait(LOAD_PAUSE_S):
                try:
                    answers[served_by(name, client=client)] += 1
                except Exception as error:  # noqa: BLE001 - every failure is the finding
                    failures.append(repr(error))

    threads = [threading.Thread(target=load, args=(protocol,)) for protocol in ("http", "grpc", "http", "grpc")]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: sum(answers.values()) > 20, 30, "the load answered before the switch")
        rollout.start(name, rollout.plan("blue-green", packages[server, 2], name))
        switched = sum(answers.values())
        wait_for(lambda: sum(answers.values()) > switched + 50, 30, "answers after the switch")
        rollout.promote(name)
        promoted = sum(answers.values())
        wait_for(lambda: sum(answers.values()) > promoted + 20, 30, "answers after the promotion")
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert not failures, failures[:5]
    assert answers[1] and answers[2], answers
    assert counts(name, "grpc", 20) == Counter({2: 20})


@pytest.mark.parametrize("primary", ["triton"], indirect=True)  # a routing rule: see blue-green's test
def test_shadow_callers_see_only_the_primary_and_mirrored_failures_change_nothing(primary, packages):
    server, name = primary
    rollout.start(name, rollout.plan("shadow", packages[server, 3], name))
    # Mirroring is best effort: a copy is not retried, and one the shadow does not answer within the mirror's
    # read timeout is cut off, which TorchServe's gRPC takes as a cancel before its handler counts it (from a
    # clean clone on two cores, 17 of 40 gRPC copies were counted; 7 with a second suite running). So each
    # protocol's copies must reach the shadow, and every one that does fails on the broken release.
    mirrored = 0
    for protocol in ("http", "grpc"):
        assert counts(name, protocol, 40) == Counter({1: 40})
        try:
            mirrored = wait_for(lambda: (received := _canary_requests(name)) > mirrored and received, 60,
                                f"copies of the 40 {protocol} requests mirrored")
        except AssertionError as timeout:
            raise AssertionError(f"{timeout}: the canary got {_canary_requests(name) - mirrored}") from None
    (canary_row,) = rollout.status(name)["tracks"]["canary"]["models"]
    assert canary_row["outcomes"]["error"] == canary_row["requests"], canary_row


@pytest.mark.parametrize("server", ["triton"])  # a routing rule: see blue-green's test
def test_a_hanging_shadow_neither_delays_nor_fails_a_caller(server, tmp_path):
    """Every copy hangs on the shadow for HANG_S; callers on kept connections, who would wait for each copy's end
    if the mirror waited for the shadow's answer, all get theirs within a client timeout far below it."""
    name = f"shadow-hang-{server}"
    for version in (1, 4):
        mfn.package(TRACKED, tmp_path / f"v{version}", server=server, version=version)
    deployments.deploy(tmp_path / "v1", name=name, drain_timeout_s=1)
    try:
        rollout.start(name, rollout.plan("shadow", tmp_path / "v4", name))
        for protocol in ("http", "grpc"):
            with mfn.Client(name, protocol=protocol, retries=0, timeout_s=HANG_S / 3) as client:
                assert Counter(served_by(name, client=client) for _ in range(12)) == Counter({1: 12})
        # Counted as they arrive: the shadow's own request count moves only once a copy has hung its HANG_S.
        wait_for(lambda: received(server, rollout.canary_name(name)) > 0, 60, "copies reaching the hanging shadow")
    finally:
        deployments.undeploy(name)


def _canary_requests(name: str) -> int:
    return sum(row.get("requests", 0) for row in rollout.status(name)["tracks"]["canary"]["models"])


@pytest.mark.parametrize("primary", ["triton"], indirect=True)  # a routing rule: see blue-green's test
def test_ab_routes_by_header_and_a_hashed_key_keeps_each_caller_on_one_track(primary, packages):
    server, name = primary
    rollout.start(name, rollout.plan("ab", packages[server, 2], name, header="X-Group", header_value="beta"))
    assert {stock_http(server, name, {"X-Group": "beta"}) for _ in range(20)} == {(2, "canary")}
    assert {stock_http(server, name, {"X-Group": "alpha"}) for _ in range(20)} == {(1, "primary")}
    assert {stock_http(server, name) for _ in range(20)} == {(1, "primary")}
    rollout.abort(name)
    rollout.start(name, rollout.plan("ab", packages[server, 2], name, weight=50, header="X-User"))
    per_user = {user: {stock_http(server, name, {"X-User": f"user-{user}"})[0] for _ in range(5)} for user in range(20)}
    assert all(len(versions) == 1 for versions in per_user.values()), per_user
    assert {versions.pop() for versions in per_user.values()} == {1, 2}


@pytest.mark.parametrize("primary", ["triton"], indirect=True)
def test_the_commands_dry_run_report_and_refuse_by_name(primary, packages, tmp_path):
    server, name = primary
    runner = CliRunner()
    new = str(packages[server, 2])
    dry = runner.invoke(cli, ["rollout", "start", name, new, "--weight", "25", "--dry-run"])
    assert dry.exit_code == 0 and 'split_clients "$request_id" $mfn_track { 25% canary; * primary; }' in dry.output
    assert routes.load(name) is None and state.load(rollout.canary_name(name)) is None  # nothing started
    refused = runner.invoke(cli, ["rollout", "start", name, new, "--strategy", "ab"])
    assert refused.exit_code != 0 and "--header" in refused.output
    no_rollout = runner.invoke(cli, ["rollout", "status", name])
    assert no_rollout.exit_code != 0 and f"mfn rollout start {name} PATH" in no_rollout.output
    started = runner.invoke(cli, ["rollout", "start", name, new, "--steps", "10,100", "--step-interval", "1h", "--json"])
    assert started.exit_code == 0, started.output
    report = json.loads(started.output)
    assert report["rollout"]["state"] == "progressing" and report["weights"] == {"canary": 10.0, "primary": 90.0}
    listed = json.loads(runner.invoke(cli, ["status", "--json", "--no-kubernetes"]).output)["local"]
    assert next(d for d in listed if d["name"] == name)["endpoints"]["grpc"] == report["endpoints"]["grpc"]
    invoked = runner.invoke(cli, ["invoke", "tracked", "--deployment", name, "--data", '{"x": [[-1]]}', "--json"])
    assert invoked.exit_code == 0 and json.loads(invoked.output)["outputs"]["served_by"][0][0] in (1, 2), invoked.output
    again = runner.invoke(cli, ["rollout", "start", name, new])
    assert again.exit_code != 0 and "already rolling out" in again.output
    shown = runner.invoke(cli, ["rollout", "status", name])
    assert "weights: primary 90%, canary 10%" in shown.output
    # The invoke above went to one track or the other; the canary's row shows once its metrics page has mfn's series.
    assert re.search(rf"canary \({name}-canary\)(: no requests yet| tracked v2: [01] requests)", shown.output), shown.output
    aborted = runner.invoke(cli, ["rollout", "abort", name])
    assert aborted.exit_code == 0 and "rolled back" in aborted.output
    assert "rolled back (aborted by the operator)" in runner.invoke(cli, ["rollout", "status", name]).output
    # status takes --target and --namespace as promote and abort do; a release needs a cluster.
    release = runner.invoke(cli, ["rollout", "status", name, "--target", "kubernetes", "--namespace", "models"],
                            env={"KUBECONFIG": str(tmp_path / "no-kubeconfig")})
    assert release.exit_code == 1 and "no kubeconfig at" in release.output, release.output


@pytest.mark.parametrize("primary", ["triton"], indirect=True)
def test_a_killed_proxy_or_controller_is_started_again_on_the_same_endpoints(primary, packages):
    import os
    import signal

    server, name = primary
    rollout.start(name, rollout.plan("canary", packages[server, 2], name, weight=50))
    route = routes.load(name)
    os.kill(routes.nginx_pid(route), signal.SIGKILL)  # the controller starts nginx again
    wait_for(lambda: routes.nginx_pid(route) is not None and answers(name), 30, "nginx back")
    os.kill(route.controller_pid, signal.SIGKILL)  # nginx ends with it; the deployment's supervisor starts both again
    wait_for(lambda: routes.load(name).controller_running and routes.nginx_pid(route) is not None, 30, "controller back")
    assert routes.load(name).ports == route.ports
    wait_for(lambda: answers(name), 30, "answers after the controller's restart")
    assert set(counts(name, "grpc", 40)) == {1, 2}


def answers(name: str) -> bool:
    try:
        return served_by(name) in (1, 2)
    except MfnError:
        return False


def test_deploy_with_proxy_keeps_the_ports_given_through_a_rollout_and_its_promotion(packages):
    from click.testing import CliRunner

    from mfn.cli.main import cli
    from mfn.servers.process import free_ports

    name, (http_port, grpc_port) = "ro-proxied", free_ports(2)
    deployed = CliRunner().invoke(cli, ["deploy", str(packages["triton", 1]), "--name", name, "--proxy",
                                        "--http-port", str(http_port), "--grpc-port", str(grpc_port), "--json"])
    try:
        assert deployed.exit_code == 0, deployed.output
        endpoints = json.loads(deployed.output)["endpoints"]
        assert endpoints["http"].endswith(f":{http_port}") and endpoints["grpc"].endswith(f":{grpc_port}")
        assert state.get(name).ports["http"] != http_port  # the server listens on a port of its own behind nginx
        assert stock_http("triton", name) == (1, "primary")
        # A body over nginx's 1 MiB memory buffer goes through its temporary files, in the route's directory.
        assert stock_http("triton", name, padding=3 << 20) == (1, "primary")
        rollout.start(name, rollout.plan("canary", packages["triton", 2], name, weight=50))
        assert routes.load(name).ports == {"http": http_port, "grpc": grpc_port}
        rollout.promote(name)
        assert stock_http("triton", name) == (2, "primary") and routes.load(name).ports["grpc"] == grpc_port
    finally:
        deployments.undeploy(name)
    assert routes.load(name) is None


@pytest.mark.parametrize("primary", ["torchserve"], indirect=True)
def test_the_proxy_follows_a_track_restarted_with_new_keys(primary, packages):
    import os
    import signal

    from mfn.local.supervision import read_status

    server, name = primary
    rollout.start(name, rollout.plan("canary", packages[server, 2], name, weight=100))
    canary = state.get(rollout.canary_name(name))
    key_before = state.read_key(canary, "inference")
    os.killpg(read_status(canary).server_pid, signal.SIGKILL)  # the supervisor starts it again: TorchServe makes new keys
    wait_for(lambda: (status := read_status(canary)).restarts == 1 and status.state == "running", 120, "the restart")
    assert state.read_key(canary, "inference") != key_before
    # The supervisor has the proxy follow before it reports the server running: no tick of the controller awaited.
    assert answers(name)
    assert counts(name, "http", 20) == Counter({2: 20})
