"""The response cache on both real servers, HTTP and gRPC: Triton's own cache and TorchServe's LRU for
kind='local', a real redis-server on loopback for kind='redis' (shared by a Triton and a TorchServe deployment,
its password only in the servers' environment), TTL expiry, and Redis stopped mid-run.

The handlers (tests/handlers/counted.py) answer with the number of predict calls their worker has made, so a reused
answer is told from a computed one by it.
"""

from __future__ import annotations

import itertools
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import mfn
from mfn.local import deployments, state
from mfn.errors import MfnError
from mfn.handlers.declarations import REDIS_URL_ENV
from mfn.monitoring.stats import deployment_stats
from mfn.servers.process import find_tool, free_ports
from tests.conftest import HANDLERS, wait_for

COUNTED = f"{HANDLERS / 'counted.py'}:Counted"
COUNTED_FIXED = f"{HANDLERS / 'counted.py'}:CountedFixed"
SERVERS = ("triton", "torchserve")
# local: fixed per-row dims and one output (Triton's own cache on Triton); variable: a variable dim and two
# outputs (mfn's adapter caches on both servers); redis: Redis on both servers.
KINDS = ("local", "variable", "redis")
TTL_S = 3
_inputs = itertools.count(1)


def fresh_input() -> np.ndarray:
    """A request no test has sent before (values at or below 0: the handler does not sleep)."""
    return np.array([[-float(next(_inputs)), -0.5]], dtype=np.float32)


class Redis:
    """A redis-server on 127.0.0.1 with a password, no persistence; restartable on the same port."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.password = secrets.token_hex(8)
        (self.port,) = free_ports(1)
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = find_tool("redis-server", "redis-server is not installed: run `make setup`")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--requirepass", self.password, "--save", "",
             "--appendonly", "no", "--dir", str(self.directory)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        wait_for(self.ping, 10, "redis-server to answer")

    def ping(self) -> bool:
        import redis

        try:
            return bool(redis.Redis.from_url(self.url, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def keys(self) -> list[bytes]:
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=1).keys("*")


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory) -> Iterator[Redis]:
    server = Redis(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def served(tmp_path_factory, redis_server) -> Iterator[dict[str, str]]:
    """One deployment per server with `cached_local`, `cached_variable` and `cached_redis`; the Redis URL, with its
    password, reaches the servers through their environment only."""
    root = tmp_path_factory.mktemp("cached")
    names = {}
    previous = os.environ.get(REDIS_URL_ENV)
    os.environ[REDIS_URL_ENV] = redis_server.url
    try:
        for server in SERVERS:
            output = root / server
            mfn.package(COUNTED_FIXED, output, server=server, name="cached_local")
            mfn.package(COUNTED, output, server=server, name="cached_variable")
            mfn.package(COUNTED, output, server=server, name="cached_redis", cache=mfn.Cache(kind="redis", ttl_s=TTL_S))
            assert redis_server.password not in "".join(path.read_bytes().decode("latin-1")
                                                        for path in output.rglob("*") if path.is_file())
            names[server] = f"cache-{server}"
            deployments.deploy(output, name=names[server], drain_timeout_s=0)
    finally:
        os.environ.pop(REDIS_URL_ENV) if previous is None else os.environ.__setitem__(REDIS_URL_ENV, previous)
    try:
        yield names
    finally:
        for name in names.values():
            deployments.undeploy(name)


def calls(answer: dict[str, np.ndarray]) -> int:
    """The predict calls the worker had made when it computed `answer` (CountedFixed appends it to `y`)."""
    return int(answer["calls"].item()) if "calls" in answer else int(answer["y"][0, -1])


def doubled(answer: dict[str, np.ndarray]) -> np.ndarray:
    return answer["y"] if "calls" in answer else answer["y"][:, :-1]


def infer(deployment: str, model: str, x: np.ndarray, protocol: str = "http") -> dict[str, np.ndarray]:
    with mfn.Client(deployment, protocol=protocol) as client:
        return client.infer(model, {"x": x})


def cache_results(deployment: str, model: str) -> dict[str, int]:
    """The model's cache lookups by result; empty until TorchServe's frontend has the worker's first update."""
    rows = [row for row in deployment_stats(state.get(deployment)) if row.model == model]
    return rows[0].cache if rows else {}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("server", SERVERS)
def test_the_same_request_twice_runs_predict_once(served, server, kind):
    name, model = served[server], f"cached_{kind}"
    for protocol in ("http", "grpc"):
        x = fresh_input()
        first = infer(name, model, x, protocol)
        again = infer(name, model, x, protocol)
        np.testing.assert_array_equal(doubled(first), x * 2)
        assert {key: value.tolist() for key, value in again.items()} == {key: value.tolist() for key, value in first.items()}
        # A new input runs predict once more: the repeated one did not.
        assert calls(infer(name, model, fresh_input(), protocol)) == calls(first) + 1
    # Two hits (the repeats); misses: 4 (two first sends, two new inputs).
    # Hits and misses reach the metrics port a flush apart: wait for both, then check neither went past.
    counted = wait_for(lambda: ((results := cache_results(name, model)).get("hit", 0) >= 2
                                and results.get("miss", 0) >= 4 and results), 30, "the hits and misses in the cache metrics")
    assert counted.get("hit") == 2 and counted.get("miss") == 4 and counted.get("error", 0) == 0, counted


@pytest.mark.parametrize("model", ["cached_variable", "cached_redis"])
@pytest.mark.parametrize("server", SERVERS)
def test_requests_that_differ_only_in_shape_are_not_confused(served, server, model):
    """[1, 2] and [2, 1] hold the same bytes, and are different requests (Triton's own cache would answer one
    with the other: mfn leaves it to models whose inputs fix their shape)."""
    name = served[server]
    values = -np.arange(1, 3, dtype=np.float32) - 1000 * (1 + SERVERS.index(server))
    wide = infer(name, model, values.reshape(1, 2))
    tall = infer(name, model, values.reshape(2, 1))
    assert wide["y"].shape == (1, 2) and tall["y"].shape == (2, 1)
    assert tall["calls"][0, 0] == wide["calls"][0, 0] + 1


def test_a_redis_cache_is_shared_by_two_deployments_on_different_servers(served, redis_server):
    x = fresh_input()
    from_triton = infer(served["triton"], "cached_redis", x)
    from_torchserve = infer(served["torchserve"], "cached_redis", x, "grpc")
    # TorchServe answered with Triton's answer, predict-call count included: it did not run predict.
    assert calls(from_torchserve) == calls(from_triton)
    np.testing.assert_array_equal(from_torchserve["y"], from_triton["y"])
    keys = redis_server.keys()
    assert keys and all(key.startswith(b"mfn:cached_redis:1:") for key in keys), keys


def test_an_answer_expires_after_its_ttl(served):
    name, x = served["torchserve"], fresh_input()
    first = infer(name, "cached_redis", x)
    stored_at = time.monotonic()
    assert calls(infer(name, "cached_redis", x)) == calls(first)
    recomputed = wait_for(lambda: calls(answer := infer(name, "cached_redis", x)) != calls(first)
                          and answer, TTL_S + 10, "the answer to expire", every_s=0.25)
    assert time.monotonic() - stored_at >= TTL_S - 0.5  # not dropped before its time (Redis expires to the ms)
    assert calls(recomputed) > calls(first)


@pytest.mark.parametrize("server", SERVERS)
def test_redis_stopped_mid_run_answers_continue_and_errors_are_counted(served, redis_server, server):
    name = served[server]
    before = wait_for(lambda: cache_results(name, "cached_redis"), 30, "cache metrics")
    redis_server.stop()
    try:
        for protocol in ("http", "grpc"):
            for _ in range(10):
                x = fresh_input()
                np.testing.assert_array_equal(infer(name, "cached_redis", x, protocol)["y"], x * 2)
        wait_for(lambda: cache_results(name, "cached_redis").get("error", 0) >= before.get("error", 0) + 20, 30,
                 "the 20 requests counted as cache errors")
    finally:
        redis_server.start()
    # Back: after the pause that follows a failure, answers are stored and reused again.
    x = fresh_input()
    wait_for(lambda: calls(infer(name, "cached_redis", x)) == calls(infer(name, "cached_redis", x)),
             15, "the cache to work again after Redis came back", every_s=0.5)


def test_a_model_for_tritons_cache_is_refused_by_a_server_started_without_one(tmp_path):
    """Triton would load it and serve it uncached without a word: its cache is sized when the server starts."""
    from mfn.local import operations

    mfn.package(COUNTED, tmp_path, name="uncached", cache="off")
    name = "cache-later"
    deployments.deploy(tmp_path, name=name, drain_timeout_s=0)
    try:
        mfn.package(COUNTED_FIXED, tmp_path)
        with pytest.raises(MfnError, match="counted_fixed caches answers in Triton's response cache, and cache-later's "
                                           "server started without one"):
            operations.load("counted_fixed", deployment=name)
    finally:
        deployments.undeploy(name)
    deployments.deploy(tmp_path, name=name, drain_timeout_s=0)  # started with both: sized for the cached one
    try:
        x = np.array([[-3.0, -4.0]], dtype=np.float32)
        assert calls(infer(name, "counted_fixed", x)) == calls(infer(name, "counted_fixed", x))
    finally:
        deployments.undeploy(name)
