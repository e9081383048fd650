"""mfn's Triton Python-backend adapter, copied into each model version as model.py.

It only translates Triton's request and response objects; the batch loop and the handler loading
are mfn's shared runtime, the same code the TorchServe adapter runs.
"""

import json
import logging
import sys
import time
from pathlib import Path

import triton_python_backend_utils as pb_utils

# Triton's stub runs an isolated interpreter that ignores PYTHONDONTWRITEBYTECODE: without this, importing
# the handler would write __pycache__ into the model repository. (This file itself is compiled by the stub
# before any of it runs; its own cache file cannot be avoided from here.)
sys.dont_write_bytecode = True

_IMPORT_STARTED = time.perf_counter()
try:
    from mfn.model_repository.triton_metrics import TritonMetricFactory
    from mfn.runtime import cold_start
    from mfn.runtime.bundle import load_bundle
    from mfn.runtime.failures import log_failure
    from mfn.runtime.loop import RequestFailure
    from mfn.runtime.streaming import CANCELLED_STATUS, stream
except ImportError as error:
    raise ImportError(
        "mfn is not importable by Triton's Python backend: install the mfn-serve wheel inside this model "
        "(mfn-wheel/) into the Python environment of the tritonserver stub (the python3 first on PATH), or point "
        "the model's EXECUTION_ENV_PATH at one that has it"
    ) from error
_MFN_IMPORT_S = time.perf_counter() - _IMPORT_STARTED


def _triton_error(failure):
    codes = {400: "INVALID_ARG", 404: "NOT_FOUND", 503: "UNAVAILABLE", CANCELLED_STATUS: "CANCELLED"}
    code = getattr(pb_utils.TritonError, codes.get(failure.status, "INTERNAL"), None)
    if code is None:
        return pb_utils.TritonError(failure.message)
    return pb_utils.TritonError(failure.message, code)


# Asking a sender whether its request was cancelled is a round trip from the stub to the server, which cost
# about as much as sending a chunk: each request is asked at most this often (a cancelled stream may get this
# much more of its chunks before it stops).
CANCEL_CHECK_INTERVAL_S = 0.01


def _cancel_check(senders):
    asked = [0.0] * len(senders)

    def cancelled(index):
        now = time.monotonic()
        if now - asked[index] < CANCEL_CHECK_INTERVAL_S:
            return False
        asked[index] = now
        return senders[index].is_cancelled()

    return cancelled


class _TritonLogHandler(logging.Handler):
    """Python logging into Triton's own log (the stub's stderr is not part of it): ctx.logger and mfn's records
    appear there with Triton's time stamps, as they appear in TorchServe's log."""

    def emit(self, record):
        log = pb_utils.Logger
        write = log.log_error if record.levelno >= logging.ERROR else log.log_warn if record.levelno >= logging.WARNING \
            else log.log_info if record.levelno >= logging.INFO else log.log_verbose
        # Triton quotes each message on one line: a traceback stays readable as one message per line.
        for line in self.format(record).splitlines():
            write(line)


def _triton_logging():
    """mfn's loggers (the handler's ctx.logger among them) at INFO into Triton's log, set up once per stub."""
    logger = logging.getLogger("mfn")
    if not any(isinstance(handler, _TritonLogHandler) for handler in logger.handlers):
        handler = _TritonLogHandler()
        handler.setFormatter(logging.Formatter("%(name)s %(levelname)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logging.getLogger("mfn.server")


class TritonPythonModel:
    """Serves one packaged mfn handler."""

    def initialize(self, args):
        started = time.perf_counter()
        version_dir = Path(args["model_repository"]) / args["model_version"]
        on_gpu = args.get("model_instance_kind") == "GPU"
        device = f"cuda:{args['model_instance_device_id']}" if on_gpu else "cpu"
        self.metrics = TritonMetricFactory()
        self.logger = _triton_logging()
        # Where config.pbtxt enables Triton's own response cache, its hits never reach here.
        cached_by_triton = bool(json.loads(args["model_config"]).get("response_cache", {}).get("enable"))
        self.model = load_bundle(version_dir, device=device, instance=args["model_instance_name"], metrics=self.metrics,
                                 server_caches_locally=cached_by_triton)
        self.answer = self.model.answer
        self.input_names = [tensor.name for tensor in self.model.spec.inputs]
        self.output_names = [tensor.name for tensor in self.model.spec.outputs]
        self.streaming = self.model.spec.streaming
        self.model.warm_up()  # before initialize returns: the model is not ready until then, as on TorchServe
        cold_start.record(self.model.spec.name, self.model.spec.version,
                          cold_start.with_adapter_share(self.model.timings, _MFN_IMPORT_S + time.perf_counter() - started))

    def execute(self, requests):
        in_flight = self.model.loop.metrics.in_flight
        in_flight.add(len(requests))
        try:
            if self.streaming:
                return self._stream(requests)
            outcomes = self.answer([self._decode(request) for request in requests])
            return [self._encode(request, outcome) for request, outcome in zip(requests, outcomes)]
        finally:
            in_flight.add(-len(requests))

    def _stream(self, requests):
        """A decoupled model: each chunk goes out through its request's sender as the handler yields it, and
        each request ends with the final flag. Runs within execute, so the batch's requests stream together."""
        senders = [request.get_response_sender() for request in requests]
        final = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        steps = stream(self.model.loop, [self._decode(request) for request in requests], cancelled=_cancel_check(senders))
        for step in steps:
            for event in step:
                sender = senders[event.index]
                flags = final if event.last else 0
                if event.outcome is None:
                    sender.send(flags=flags)
                else:
                    sender.send(self._encode(requests[event.index], event.outcome), flags=flags)
        return None

    def finalize(self):
        self.model.close()
        self.metrics.close()

    def _decode(self, request):
        arrays = {}
        for name in self.input_names:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                return RequestFailure(f"missing input {name!r}")
            arrays[name] = tensor.as_numpy()
        return arrays

    def _encode(self, request, outcome):
        if isinstance(outcome, RequestFailure):
            log_failure(self.logger, self.model.spec, request.request_id(), outcome)
            return pb_utils.InferenceResponse(error=_triton_error(outcome))
        # Every output: Triton's Python backend passes on only those the client asked for.
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(name, outcome[name]) for name in self.output_names])
