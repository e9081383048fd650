"""Per-request cost of mfn's TorchServe adapter against the hand-written BaseHandler, in-process.

No server and no network: both handlers' `handle()` are called with the same request rows, so the
difference is exactly the Python work each does per request. Run: `python benchmarks/adapter_overhead.py`.
"""

import json
import sys
import tempfile
import time
from pathlib import Path

import mfn

ROOT = Path(__file__).resolve().parent.parent
BODY = {"inputs": [{"name": "text", "shape": [1, 1], "datatype": "BYTES", "data": ["model functions, served fast"]}]}


class FakeContext:
    """The parts of TorchServe's context the handlers touch."""

    def __init__(self, model_dir: Path) -> None:
        self.system_properties = {"model_dir": str(model_dir), "gpu_id": None}
        self.metrics = self

    def add_metric_to_cache(self, *args, **kwargs):
        return self

    def add_or_update(self, *args, **kwargs):
        pass

    def set_response_status(self, **kwargs):
        pass


def per_request_us(handler, context, rows: int, seconds: float = 1.0) -> float:
    data = [{"body": BODY}] * rows
    handler.handle(data, context)
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        handler.handle(data, context)
        calls += 1
    return (time.perf_counter() - started) / (calls * rows) * 1e6


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="mfn-overhead-"))
    model_dir = mfn.package(f"{ROOT / 'examples/text_stats/handler.py'}:text_stats", root, target="torchserve", archive_format="no-archive").path
    (model_dir / "benchmark.json").write_text(json.dumps({"model": "text_stats"}))
    sys.path[:0] = [str(model_dir), str(ROOT / "benchmarks/handwritten")]
    from mfn_torchserve_adapter import MfnHandler
    from torchserve_handler import Handwritten

    context = FakeContext(model_dir)
    handlers = {"mfn": MfnHandler(), "hand": Handwritten()}
    for handler in handlers.values():
        handler.initialize(context)
    for rows in (1, 8, 32):
        costs = {name: per_request_us(handler, context, rows) for name, handler in handlers.items()}
        print(f"text_stats, {rows:2} requests per handle(): mfn {costs['mfn']:6.1f} us/request, hand {costs['hand']:6.1f} us/request")


if __name__ == "__main__":
    main()
