"""The response cache's parts without a server: the declaration, keys, the entry format, the LRU, and the
cache in front of a real batch loop whose store fails (the real-server and real-Redis checks are in
tests/integration/test_cache.py)."""

from __future__ import annotations

import hashlib
import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import mfn
from mfn.errors import SpecError
from mfn.handlers.metrics import InMemoryMetrics
from mfn.runtime.cache import CACHE_REQUESTS, REDIS_RETRY_AFTER_S, CachedAnswers, LocalAnswers, request_key, spec_digest
from mfn.runtime.bundle import content_digest
from mfn.runtime.cache_codec import answer_bytes, answer_from_bytes, answer_size
from mfn.runtime.loop import BatchLoop, RequestFailure
from mfn.runtime.metrics import REQUESTS, LoopMetrics
from mfn.spec import Entrypoint, ModelSpec, spec_from_handler

ENTRY = Entrypoint(file="handler.py", attribute="Doubler")


class Doubler(mfn.Handler):
    name = "doubler"
    inputs = [mfn.Tensor("x", "FP32", [-1]), mfn.Tensor("tag", "BYTES", [1])]
    outputs = [mfn.Tensor("y", "FP32", [-1])]
    cache = mfn.Cache()

    def setup(self, ctx=None):
        self.batches = []

    def predict(self, inputs):
        self.batches.append(len(inputs["x"]))
        if (inputs["x"] < 0).any():
            raise ValueError("negative")
        return {"y": inputs["x"] * 2}


def request(*values: float, tag: bytes = b"a") -> dict[str, np.ndarray]:
    return {"x": np.array([values], dtype=np.float32), "tag": np.array([[tag]], dtype=object)}


class Store:
    """A cache store that holds answers in a dict, or fails every call while `down`."""

    def __init__(self) -> None:
        self.entries: dict[str, dict] = {}
        self.down = False
        self.calls = 0

    def get_many(self, keys):
        self.calls += 1
        if self.down:
            raise ConnectionError("refused")
        return {key: self.entries[key] for key in keys if key in self.entries}

    def put_many(self, answers):
        self.calls += 1
        if self.down:
            raise ConnectionError("refused")
        self.entries.update(answers)


def cached(store=None):
    spec = spec_from_handler(Doubler, ENTRY)
    handler = Doubler()
    handler.setup()
    metrics = InMemoryMetrics()
    loop = BatchLoop(handler, spec, LoopMetrics(metrics, spec.name, spec.version))
    return handler, CachedAnswers(loop, spec, store or Store(), metrics), metrics


def results(metrics: InMemoryMetrics) -> dict[str, float]:
    return {result: metrics.total(CACHE_REQUESTS, result=result) for result in ("hit", "miss", "error")}


def test_a_repeated_request_is_answered_without_predict_and_counted_as_a_hit():
    handler, answers, metrics = cached()
    first = answers.run([request(1, 2)])
    again = answers.run([request(1, 2)])
    assert handler.batches == [1]
    np.testing.assert_array_equal(again[0]["y"], first[0]["y"])
    assert results(metrics) == {"hit": 1, "miss": 1, "error": 0}
    # Requests the model ran, as on Triton whose own cache answers before mfn sees a request.
    assert metrics.total(REQUESTS, outcome="success") == 1


def test_identical_requests_in_one_batch_run_once_and_failures_are_never_stored():
    handler, answers, metrics = cached()
    outcomes = answers.run([request(1), request(1), request(-1), request(2, tag=b"b")])
    assert handler.batches == [3, 1, 2, 1, 1]  # one batch of the three distinct requests, then the failure isolated
    np.testing.assert_array_equal(outcomes[1]["y"], outcomes[0]["y"])
    assert isinstance(outcomes[2], RequestFailure)
    assert len(answers.store.entries) == 2
    assert results(metrics) == {"hit": 1, "miss": 3, "error": 0}
    assert isinstance(answers.run([request(-1)])[0], RequestFailure) and handler.batches[-1] == 1


def test_invalid_requests_skip_the_cache_and_fail_as_without_it():
    handler, answers, metrics = cached()
    (outcome,) = answers.run([{"x": np.ones((1, 2), dtype=np.float64), "tag": np.array([[b"a"]], dtype=object)}])
    assert isinstance(outcome, RequestFailure) and "dtype" in outcome.message
    assert results(metrics) == {"hit": 0, "miss": 0, "error": 0}


def test_a_failing_store_is_counted_and_skipped_for_a_while_and_every_request_is_computed(monkeypatch):
    store = Store()
    handler, answers, metrics = cached(store)
    answers.run([request(1)])
    store.down = True
    outcomes = answers.run([request(1), request(3)])
    np.testing.assert_array_equal(outcomes[1]["y"], [[6]])
    calls = store.calls
    answers.run([request(4)])
    assert store.calls == calls  # skipped while the failure is recent: no timeout per request
    assert results(metrics) == {"hit": 0, "miss": 1, "error": 3}
    store.down = False
    clock = time.monotonic() + REDIS_RETRY_AFTER_S + 0.1
    monkeypatch.setattr("mfn.runtime.cache.time.monotonic", lambda: clock)
    answers.run([request(1)])
    assert results(metrics)["hit"] == 1


def test_keys_differ_by_each_inputs_dtype_shape_bytes_and_by_the_spec():
    spec = spec_from_handler(Doubler, ENTRY)
    digest = spec_digest(spec)
    key = request_key(digest, spec, request(1, 2))
    assert key.startswith("doubler:1:")
    assert request_key(digest, spec, request(1, 2)) == key
    assert request_key(digest, spec, {"tag": request(1, 2)["tag"], "x": request(1, 2)["x"]}) == key  # input order
    same_text = {**request(1, 2), "tag": np.array([["a"]], dtype=object)}  # str or bytes: the same text
    assert request_key(digest, spec, same_text) == key
    tall = {**request(1, 2), "x": np.array([[1], [2]], dtype=np.float32)}
    others = [request(2, 1), request(1, 2, tag=b"b"), tall, {**request(1, 2), "x": np.array([[1, 2]], dtype=np.float64)}]
    assert len({key, *(request_key(digest, spec, other) for other in others)}) == 5
    newer = spec.model_copy(update={"version": 2})
    assert request_key(spec_digest(newer), newer, request(1, 2)) != key
    changed = spec.model_copy(update={"batching": mfn.Batching(max_batch_size=4)})
    assert request_key(spec_digest(changed), changed, request(1, 2)) != key
    assert request_key(spec_digest(spec, content_digest_of(b"weights v2")), spec, request(1, 2)) != \
        request_key(spec_digest(spec, content_digest_of(b"weights v1")), spec, request(1, 2))


def content_digest_of(weights: bytes) -> str:
    return hashlib.sha256(weights).hexdigest()


def test_the_content_digest_follows_the_handler_source_and_artifacts_and_nothing_else(tmp_path):
    def bundle(name: str, source: str, weights: bytes) -> str:
        root = tmp_path / name
        (root / "handler").mkdir(parents=True)
        (root / "handler" / "handler.py").write_text(source)
        (root / "artifacts" / "weights").mkdir(parents=True)
        (root / "artifacts" / "weights" / "w.bin").write_bytes(weights)
        (root / "requirements.txt").write_text(name)  # not part of the content
        return content_digest(root)

    first = bundle("a", "x = 1\n", b"w1")
    assert bundle("b", "x = 1\n", b"w1") == first
    assert bundle("c", "x = 2\n", b"w1") != first
    assert bundle("d", "x = 1\n", b"w2") != first


@given(st.lists(st.binary(max_size=20), min_size=1, max_size=6), st.lists(st.floats(allow_nan=False, width=32), min_size=1, max_size=6))
def test_entries_round_trip_numbers_and_text_exactly(texts, numbers):
    text = np.empty((len(texts), 1), dtype=object)
    text[:, 0] = texts
    answer = {"text": text, "numbers": np.array(numbers, dtype=np.float32).reshape(1, -1), "ids": np.arange(6).reshape(2, 3)}
    restored = answer_from_bytes(answer_bytes(answer))
    assert list(restored) == list(answer)
    for name, array in answer.items():
        assert restored[name].shape == array.shape and restored[name].tolist() == array.tolist()
        assert restored[name].dtype == array.dtype


@pytest.mark.parametrize("data", [b"", b"GET /", b"mfnA1", answer_bytes({"y": np.ones(3)})[:-1], answer_bytes({"y": np.ones(3)}) + b"x"])
def test_values_mfn_did_not_write_are_refused_not_trusted(data):
    with pytest.raises(ValueError):
        answer_from_bytes(data)


def test_the_local_lru_keeps_within_its_size_and_drops_the_least_recently_used():
    answers = LocalAnswers(limit_bytes=3 * 400)
    entry = {"y": np.ones(100, dtype=np.float32)}  # 400 bytes
    assert answer_size(entry) == 400
    for key in "abc":
        answers.put_many({key: entry})
    answers.get_many(["a"])  # a is now the most recent
    answers.put_many({"d": entry})
    assert sorted(answers.get_many(list("abcd"))) == ["a", "c", "d"]
    assert answers.used_bytes == 1200
    answers.put_many({"huge": {"y": np.ones(1000, dtype=np.float32)}})  # larger than the whole cache: not kept
    assert "huge" not in answers.get_many(["huge"])
    kept = answers.get_many(["a"])["a"]["y"]
    assert not kept.flags.writeable


def test_the_declaration_names_its_mistakes():
    assert mfn.Cache.parse("off") is None
    assert mfn.Cache.parse("local,size_mb=16") == mfn.Cache(kind="local", size_mb=16)
    assert mfn.Cache.parse("redis,url=redis://cache:6379/0,ttl_s=5").ttl_s == 5
    assert mfn.Cache.parse("redis,url=unix:///run/redis.sock?db=2").url == "unix:///run/redis.sock?db=2"
    mistakes = {
        "redis,url=redis://user:secret@cache:6379/0": "credentials must not be packaged",
        "local,ttl_s=5": "ttl_s: only for kind='redis'",
        "redis,size_mb=5": "size_mb: only for kind='local'",
        "redis,url=http://cache": "use a redis://, rediss:// or unix:// URL",
        "redis,url=redis://cache:6379/0?password=secret": "no query options but db",
        "memcached": "start with 'local', 'redis' or 'off'",
        "local,size=5": "'size=5' is not KEY=VALUE with a key among",
    }
    for text, message in mistakes.items():
        with pytest.raises(ValueError, match=message.replace("(", r"\(")):
            mfn.Cache.parse(text)


def test_a_cached_spec_reads_back_and_refuses_handlers_that_must_not_be_cached():
    spec = spec_from_handler(Doubler, ENTRY, cache=mfn.Cache(kind="redis", url="redis://cache:6379/0", ttl_s=9))
    assert ModelSpec.from_json(spec.to_json()) == spec
    assert spec_from_handler(Doubler, ENTRY, cache="off").cache is None

    class Sampler(Doubler):
        deterministic = False

    with pytest.raises(SpecError, match="deterministic=False"):
        spec_from_handler(Sampler, ENTRY)
    assert spec_from_handler(Sampler, ENTRY, cache="off").cache is None

    class Streamer(Doubler):
        def predict(self, inputs):
            yield {"y": inputs["x"]}

    with pytest.raises(SpecError, match="streaming"):
        spec_from_handler(Streamer, ENTRY)
