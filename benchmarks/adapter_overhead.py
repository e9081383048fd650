"""Per-request cost of mfn's TorchServe adapter against the hand-written BaseHandler, in-process.

No server and no network; two measurements per batch size:
- handle(): both handlers' `handle()` called with the same, already parsed, request rows, so the
  difference is the Python work each handler does per request.
- worker: what TorchServe's Python worker does per request around `handle()` as well: parse the JSON
  body (unless the handler switched that off with TS_DECODE_INPUT_REQUEST=false, as mfn's does), call
  `handle()` with a real TorchServe context, and serialise the answers (`create_predict_response`,
  which writes dicts with `json.dumps(indent=2)` and passes bytes through).

Run: `python benchmarks/adapter_overhead.py`.
"""

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import mfn

ROOT = Path(__file__).resolve().parent.parent
BODY = {"inputs": [{"name": "text", "shape": [1, 1], "datatype": "BYTES", "data": ["model functions, served fast"]}]}
RAW_BODY = json.dumps(BODY).encode()


class FakeMetrics:
    """A metrics cache that records nothing."""

    def add_metric_to_cache(self, *args, **kwargs):
        return self

    def add_or_update(self, *args, **kwargs):
        pass


class FakeContext(FakeMetrics):
    """The parts of TorchServe's context the handlers touch."""

    def __init__(self, model_dir: Path) -> None:
        self.system_properties = {"model_dir": str(model_dir), "gpu_id": None}
        self.metrics = self

    def set_response_status(self, **kwargs):
        pass

    def set_response_content_type(self, *args):
        pass

    def set_response_header(self, *args):
        pass

    def get_all_request_header(self, index):
        return {"Content-Type": "application/json", "Host": "127.0.0.1", "Authorization": "Bearer k"}


def per_request_us(once, rows: int, repeats: int = 5, seconds: float = 0.3) -> float:
    """Microseconds per request of `once()`, which handles `rows` requests: the best of `repeats` timed runs,
    so that other work on the machine does not count."""
    once()
    best = float("inf")
    for _ in range(repeats):
        calls, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            once()
            calls += 1
        best = min(best, (time.perf_counter() - started) / (calls * rows) * 1e6)
    return best


def handle_only(handler, context, rows: int):
    data = [{"body": BODY}] * rows
    return lambda: handler.handle(data, context)


def worker_path(handler, context, rows: int, worker_parses_json: bool):
    from ts.context import RequestProcessor
    from ts.protocol.otf_message_handler import create_predict_response

    raw = bytearray(RAW_BODY)  # the worker reads bodies off its socket into bytearrays
    ids = {index: f"request-{index}" for index in range(rows)}

    def once():
        data = [{"body": json.loads(raw.decode("utf-8")) if worker_parses_json else raw} for _ in range(rows)]
        context.request_ids = ids
        context.request_processor = [RequestProcessor({}) for _ in range(rows)]
        answers = handler.handle(data, context)
        return create_predict_response(answers, ids, "Prediction success", 200, context)

    return once


def main() -> None:
    import logging

    from ts.context import Context

    logging.disable(logging.WARNING)  # TorchServe announces optional accelerators it did not find
    root = Path(tempfile.mkdtemp(prefix="mfn-overhead-"))
    model_dir = mfn.package(f"{ROOT / 'examples/text_stats/handler.py'}:text_stats", root, server="torchserve", archive_format="no-archive").path
    (model_dir / "benchmark.json").write_text(json.dumps({"model": "text_stats"}))
    sys.path[:0] = [str(model_dir), str(ROOT / "benchmarks/handwritten")]
    from mfn_torchserve_adapter import MfnHandler
    from torchserve_handler import Handwritten

    fake = FakeContext(model_dir)
    real = Context("text_stats", str(model_dir), {}, 32, None, "bench", metrics=FakeMetrics())
    handlers, parses = {"hand": Handwritten(), "mfn": MfnHandler()}, {}
    for name, handler in handlers.items():
        os.environ.pop("TS_DECODE_INPUT_REQUEST", None)
        handler.initialize(fake)
        # The rule of TorchServe's worker (ts/protocol/otf_message_handler.py), as each handler leaves it.
        parses[name] = os.environ.get("TS_DECODE_INPUT_REQUEST") in (None, "true")
    for rows in (1, 8, 32):
        alone = {name: per_request_us(handle_only(handler, fake, rows), rows) for name, handler in handlers.items()}
        worker = {name: per_request_us(worker_path(handler, real, rows, parses[name]), rows) for name, handler in handlers.items()}
        print(f"text_stats, {rows:2} requests per handle(): "
              f"handle() mfn {alone['mfn']:5.1f} us/request, hand {alone['hand']:5.1f}; "
              f"worker mfn {worker['mfn']:5.1f} us/request, hand {worker['hand']:5.1f}")


if __name__ == "__main__":
    main()
