"""Per-request cost of mfn's adapters against the hand-written ones, in-process, for the text_stats example.

No server and no network. TorchServe, per batch size:
- handle(): both handlers' `handle()` called with the same, already parsed, request rows, so the
  difference is the Python work each handler does per request.
- worker: what TorchServe's Python worker does per request around `handle()` as well: parse the JSON
  body (unless the handler switched that off with TS_DECODE_INPUT_REQUEST=false, as mfn's does), call
  `handle()` with a real TorchServe context, and serialise the answers (`create_predict_response`,
  which writes dicts with `json.dumps(indent=2)` and passes bytes through).
Triton: both model.py files' `execute()` with the same requests. `triton_python_backend_utils` exists only
inside Triton's stub, so a stand-in with the calls the two files make takes its place: its tensors and
responses cost nothing, and what remains is each file's own Python work per request.

`--check` (run by `make test`) fails when mfn's per-request cost passes a bound relative to the hand-written
adapter measured in the same run: a doubling of mfn's adapter cost fails, the spread of a busy machine does
not. The servers' throughput is compared in `make bench` (benchmarks/run.py).

Run: `python benchmarks/adapter_overhead.py [--check]`.
"""

import argparse
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

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


# mfn's per-request cost over the hand-written adapter's, above which --check fails. Measured: Triton execute()
# about 2.1x, TorchServe handle() about 3.6x (BENCHMARKS.md); a doubling of mfn's cost reads about 4.2x and 7x.
BOUNDS = {"triton execute()": 3.5, "torchserve handle()": 5.5}


def stand_in_pb_utils() -> types.ModuleType:
    """The calls of `triton_python_backend_utils` the two model.py files make, at no cost of their own."""
    module = types.ModuleType("triton_python_backend_utils")

    class Tensor:
        __slots__ = ("_name", "_array")

        def __init__(self, name, array):
            self._name, self._array = name, array

        def as_numpy(self):
            return self._array

    class InferenceResponse:
        def __init__(self, output_tensors=None, error=None):
            self.output_tensors, self.error = output_tensors, error

    class Series:
        def increment(self, value):
            pass

        def set(self, value):
            pass

    class MetricFamily:
        COUNTER, GAUGE = "counter", "gauge"

        def __init__(self, name, description, kind):
            pass

        def Metric(self, labels=None):  # noqa: N802 - Triton's spelling
            return Series()

    class Logger:
        log_info = log_warn = log_error = log_verbose = staticmethod(lambda message: None)

    module.Tensor, module.InferenceResponse, module.MetricFamily, module.Logger = Tensor, InferenceResponse, MetricFamily, Logger
    module.TritonError = RuntimeError
    module.TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1
    module.get_input_tensor_by_name = lambda request, name: request.inputs.get(name)
    return module


class Request:
    """A Triton request as model.py reads it: named input tensors."""

    def __init__(self, pb_utils: types.ModuleType, arrays: dict) -> None:
        self.inputs = {name: pb_utils.Tensor(name, array) for name, array in arrays.items()}

    def request_id(self):
        return "bench"


def triton_models(root: Path) -> dict:
    """mfn's model.py and the hand-written one, initialised as Triton's stub would."""
    sys.modules["triton_python_backend_utils"] = stand_in_pb_utils()
    repository = root / "triton"
    mfn.package(f"{ROOT / 'examples/text_stats/handler.py'}:text_stats", repository)
    hand_version = repository / "hand" / "1"
    hand_version.mkdir(parents=True)
    hand_version.joinpath("model.py").write_bytes((ROOT / "benchmarks/handwritten/triton_model.py").read_bytes())
    configs = {"text_stats": {}, "hand": {"parameters": {"MODEL": {"string_value": "text_stats"}},
                                          "input": [{"name": "text"}], "output": [{"name": "n_chars"}]}}
    models = {}
    for label, name in (("mfn", "text_stats"), ("hand", "hand")):
        spec = importlib.util.spec_from_file_location(f"bench_{label}_model", repository / name / "1" / "model.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        model = module.TritonPythonModel()
        model.initialize({"model_repository": str(repository / name), "model_version": "1", "model_instance_kind": "CPU",
                          "model_instance_device_id": "0", "model_instance_name": f"{name}_0",
                          "model_config": json.dumps(configs[name])})
        models[label] = model
    return models


def triton_costs(models: dict) -> dict[int, dict[str, float]]:
    pb_utils = sys.modules["triton_python_backend_utils"]
    costs = {}
    for rows in (1, 8, 32):
        requests = [Request(pb_utils, {"text": np.array([[b"model functions, served fast"]], dtype=object)})
                    for _ in range(rows)]
        costs[rows] = {label: per_request_us(lambda m=model: m.execute(requests), rows) for label, model in models.items()}
    return costs


def main() -> None:
    import logging

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="Fail when mfn's cost passes BOUNDS (make test runs this).")
    check = parser.parse_args().check
    logging.disable(logging.WARNING)  # TorchServe announces optional accelerators it did not find
    root = Path(tempfile.mkdtemp(prefix="mfn-overhead-"))
    try:
        compare(root, check)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def compare(root: Path, check: bool) -> None:
    from ts.context import Context

    ratios = {}
    for rows, cost in triton_costs(triton_models(root)).items():
        print(f"triton text_stats, {rows:2} requests per execute(): mfn {cost['mfn']:5.1f} us/request, hand {cost['hand']:5.1f}")
        if rows == 1:
            ratios["triton execute()"] = cost["mfn"] / cost["hand"]
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
        print(f"torchserve text_stats, {rows:2} requests per handle(): "
              f"handle() mfn {alone['mfn']:5.1f} us/request, hand {alone['hand']:5.1f}; "
              f"worker mfn {worker['mfn']:5.1f} us/request, hand {worker['hand']:5.1f}")
        if rows == 1:
            ratios["torchserve handle()"] = alone["mfn"] / alone["hand"]
    over = {path: ratio for path, ratio in ratios.items() if ratio > BOUNDS[path]}
    print("mfn/hand, one request: " + ", ".join(f"{path} {ratio:.1f}x (bound {BOUNDS[path]}x)" for path, ratio in ratios.items()))
    if check and over:
        sys.exit(f"mfn's adapter costs passed their bounds: {over}; profile the request path (BENCHMARKS.md says how)")


if __name__ == "__main__":
    main()
