"""The response cache both adapters run in front of the batch loop: a hit is answered without predict.

Triton's own response cache serves kind='local' there (the server answers before the model sees the request);
this module serves TorchServe's local cache (an LRU per worker) and kind='redis' on both servers.

Correct before fast: a key covers the spec's digest (model name, version and every declaration), and each input's
name, dtype, shape and bytes; only successful answers are stored; any failure of the cache counts as an error and
the request is computed as if there were no cache.
"""

from __future__ import annotations

import hashlib
import logging
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from mfn.handlers.base import Arrays
from mfn.handlers.declarations import REDIS_URL_ENV, Cache
from mfn.handlers.metrics import MODEL_LABELS, MetricFactory
from mfn.runtime.metric_batching import frozen_labels
from mfn.runtime.cache_codec import answer_bytes, answer_from_bytes, answer_size
from mfn.runtime.loop import BatchLoop, Outcome
from mfn.spec import ModelSpec

CACHE_REQUESTS = "mfn_cache_requests_total"
RESULTS = ("hit", "miss", "error")
# After a Redis failure, requests skip it (counted as errors) for this long before it is tried again: a Redis
# that is down costs one timeout per interval, not one per request.
REDIS_RETRY_AFTER_S = 1.0
_LOGGER = logging.getLogger("mfn.server")


def spec_digest(spec: ModelSpec, content: str = "") -> bytes:
    """The part of every key that names the model: its name, version, every declaration and `content`, the
    digest of its handler source and artifacts (mfn.runtime.bundle.content_digest), so a package rebuilt with new
    code or weights under the same version never reuses the old one's answers."""
    return hashlib.sha256(spec.to_json().encode() + b"\0" + content.encode()).digest()


def request_key(digest: bytes, spec: ModelSpec, request: Arrays) -> str:
    """The cache key of one checked request: readable model part, then a SHA-256 over the inputs in declared
    order, each with its name, dtype and shape (text inputs item by item, as UTF-8, whatever array type
    carries them, so both servers' decoders give one key)."""
    hasher = hashlib.sha256(digest)
    for tensor in spec.inputs:
        array = request[tensor.name]
        if tensor.dtype == "BYTES":
            hasher.update(b"%s\0BYTES\0%r\0" % (tensor.name.encode(), array.shape))
            for item in array.reshape(-1):
                data = item.encode() if isinstance(item, str) else bytes(item)
                hasher.update(struct.pack("<Q", len(data)))
                hasher.update(data)
        else:
            hasher.update(b"%s\0%s\0%r\0" % (tensor.name.encode(), array.dtype.str.encode(), array.shape))
            hasher.update(np.ascontiguousarray(array).data)
    return f"{spec.name}:{spec.version}:{hasher.hexdigest()}"


class LocalAnswers:
    """An LRU of answers within `limit_bytes`, for one worker process."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.used_bytes = 0
        self._entries: OrderedDict[str, tuple[Arrays, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get_many(self, keys: Sequence[str]) -> dict[str, Arrays]:
        """The answers held for `keys` (read-only arrays), each now the most recently used."""
        found = {}
        with self._lock:
            for key in keys:
                entry = self._entries.get(key)
                if entry is not None:
                    self._entries.move_to_end(key)
                    found[key] = entry[0]
        return found

    def put_many(self, answers: dict[str, Arrays]) -> None:
        """Keep copies of `answers`, dropping the least recently used past the limit (one larger than it: not kept)."""
        with self._lock:
            for key, answer in answers.items():
                size = answer_size(answer)
                if size > self.limit_bytes or key in self._entries:
                    continue
                # Copies: an answer may be a view into a whole batch's outputs, which it would keep alive.
                kept = {name: _frozen_copy(array) for name, array in answer.items()}
                self._entries[key] = (kept, size)
                self.used_bytes += size
                while self.used_bytes > self.limit_bytes:
                    _, (_, evicted) = self._entries.popitem(last=False)
                    self.used_bytes -= evicted


def _frozen_copy(array: np.ndarray) -> np.ndarray:
    copy = np.array(array, copy=True)
    copy.setflags(write=False)
    return copy


class RedisAnswers:
    """Answers in Redis, one key each with a TTL; one round trip per batch for lookups and one for stores."""

    def __init__(self, url: str, key_prefix: str, ttl_s: int, timeout_s: float) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.prefix = f"{key_prefix}:"
        self.ttl_s = ttl_s
        # No retries inside redis-py: one timeout per failure, then the breaker in CachedAnswers skips Redis.
        self.client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                                           retry=Retry(NoBackoff(), 0), health_check_interval=0)

    def get_many(self, keys: Sequence[str]) -> dict[str, Arrays]:
        """The answers Redis holds for `keys`, in one MGET; raises redis-py's errors."""
        found: dict[str, Arrays] = {}
        for key, value in zip(keys, self.client.mget([self.prefix + key for key in keys])):
            if value is not None:
                try:
                    found[key] = answer_from_bytes(value)  # type: ignore[arg-type]  # bytes: the client does not decode
                except ValueError:  # not an answer mfn wrote: a miss, overwritten by this request's answer
                    continue
        return found

    def put_many(self, answers: dict[str, Arrays]) -> None:
        """Store `answers` with the TTL, in one pipelined round trip; raises redis-py's errors."""
        pipeline = self.client.pipeline(transaction=False)
        for key, answer in answers.items():
            pipeline.set(self.prefix + key, answer_bytes(answer), ex=self.ttl_s)
        pipeline.execute()


class CachedAnswers:
    """The batch loop behind a cache: hits answered from it, misses computed together and stored."""

    def __init__(self, loop: BatchLoop, spec: ModelSpec, store: LocalAnswers | RedisAnswers, factory: MetricFactory,
                 content: str = "") -> None:
        self.loop = loop
        self.spec = spec
        self.store = store
        self._digest = spec_digest(spec, content)
        self._skip_until = 0.0
        counter = factory.counter(CACHE_REQUESTS, "Requests looked up in mfn's response cache, by result.",
                                  [*MODEL_LABELS, "result"])
        labels = {"model": spec.name, "version": str(spec.version)}
        self._result_labels = {result: frozen_labels({**labels, "result": result}) for result in RESULTS}
        self._count = lambda result, count: counter(count, self._result_labels[result])
        for result in RESULTS:
            self._count(result, 0)

    def run(self, requests: Sequence[Arrays | Exception]) -> list[Outcome]:
        """Answer every request as BatchLoop.run does, running predict only for what the cache does not hold.

        mfn_requests_total counts what the loop ran, as with Triton's own cache (whose hits never reach mfn):
        on every server and kind, answers from the cache are counted by mfn_cache_requests_total alone.
        """
        keys = [request_key(self._digest, self.spec, request)
                if isinstance(request, dict) and self.loop.conforms(request) else None for request in requests]
        looked_up = self._lookup(list(dict.fromkeys(key for key in keys if key is not None)),
                                 sum(1 for key in keys if key is not None))
        found = looked_up or {}
        outcomes: list[Outcome | None] = [None] * len(requests)
        first_of: dict[str, int] = {}
        to_run, repeats = [], []  # repeats: identical to an earlier request of this batch, which runs for both
        for index, key in enumerate(keys):
            if key is None:
                to_run.append(index)
            elif key in found:
                outcomes[index] = found[key]
            elif key in first_of:
                repeats.append(index)
            else:
                first_of[key] = index
                to_run.append(index)
        if to_run:
            for index, outcome in zip(to_run, self.loop.run([requests[index] for index in to_run])):
                outcomes[index] = outcome
        for index in repeats:
            outcomes[index] = outcomes[first_of[keys[index]]]  # type: ignore[index]
        if looked_up is not None:
            self._count("hit", sum(1 for key in keys if key in found) + len(repeats))
            self._count("miss", len(first_of))
            self._store({key: answer for key, index in first_of.items() if isinstance(answer := outcomes[index], dict)})
        return outcomes  # type: ignore[return-value]

    def _lookup(self, keys: list[str], requests: int) -> dict[str, Arrays] | None:
        """The cached answers among `keys` (the distinct keys of `requests` requests); None when the cache failed
        or is being skipped: each of the requests is counted as an error, and computed."""
        if not keys:
            return {}
        if time.monotonic() < self._skip_until:
            self._count("error", requests)
            return None
        try:
            return self.store.get_many(keys)
        except Exception as error:  # noqa: BLE001 - any failure of the cache: the answers are computed instead
            self._failed("lookup", error)
            self._count("error", requests)
            return None

    def _store(self, answers: dict[str, Arrays]) -> None:
        if not answers:
            return
        try:
            self.store.put_many(answers)
        except Exception as error:  # noqa: BLE001 - a store that fails (Redis gone, a refused value) must not fail the answers
            self._failed("store", error)

    def _failed(self, step: str, error: Exception) -> None:
        if time.monotonic() >= self._skip_until:  # once per outage interval, not per request
            _LOGGER.warning("%s v%s: response cache %s failed (%s: %s); answers are computed without it for %.0f s",
                            self.spec.name, self.spec.version, step, type(error).__name__, error, REDIS_RETRY_AFTER_S)
        self._skip_until = time.monotonic() + REDIS_RETRY_AFTER_S


def adapter_cache(spec: ModelSpec, loop: BatchLoop, factory: MetricFactory, server_caches_locally: bool,  # noqa: PLR0913
                  environ: dict[str, str], content: str = "") -> CachedAnswers | None:
    """The cache the adapter runs for `spec`, or None: no cache declared, or a local one the server runs itself.

    Raises:
        RuntimeError: kind='redis' with no URL packaged and none in the environment.
    """
    cache: Cache | None = spec.cache
    if cache is None or (cache.kind == "local" and server_caches_locally):
        return None
    if cache.kind == "local":
        return CachedAnswers(loop, spec, LocalAnswers(cache.size_mb << 20), factory, content)
    url = environ.get(REDIS_URL_ENV) or cache.url
    if not url:
        raise RuntimeError(f"{spec.name} v{spec.version} caches answers in Redis but has no URL: set {REDIS_URL_ENV} "
                           "where the server runs (the chart's cache.redis values do), or package with "
                           "Cache(kind='redis', url=...)")
    return CachedAnswers(loop, spec, RedisAnswers(url, cache.key_prefix, cache.ttl_s, cache.timeout_ms / 1000), factory,
                         content)
