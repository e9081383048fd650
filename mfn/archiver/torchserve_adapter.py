"""mfn's TorchServe adapter, the handler of every archive mfn builds.

It only translates TorchServe's request rows and per-request statuses; decoding JSON bodies, the
batch loop and the handler loading are mfn's shared runtime, the same code the Triton adapter runs.
"""

import logging
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

from ts.torch_handler.base_handler import BaseHandler

_IMPORT_STARTED = time.perf_counter()
try:
    from mfn.archiver.ts_metrics import TorchServeMetricFactory
    from mfn.runtime import cold_start
    from mfn.runtime.bundle import load_bundle
    from mfn.runtime.codec import DEFAULT_LIMITS, ServerCodec
    from mfn.runtime.codec.binary import HEADER_LENGTH, OCTET_STREAM
    from mfn.runtime.failures import log_failure
    from mfn.runtime.loop import RequestFailure
    from mfn.runtime.streaming import stream
except ImportError as error:
    raise ImportError(
        "mfn is not importable by the TorchServe worker: install the mfn-serve wheel inside this archive "
        "(mfn-wheel/) into the Python environment TorchServe runs"
    ) from error
_MFN_IMPORT_S = time.perf_counter() - _IMPORT_STARTED

JSON = "application/json"
NDJSON = "application/x-ndjson"
# A streamed answer is one JSON document per line (TorchServe keeps no chunk boundaries a client can rely on),
# each starting with its chunk number under CHUNK_KEY (so a client that did not ask for a stream can tell); this
# line ends a request that streamed to its end, an {"error": ...} line one that failed.
CHUNK_KEY = "mfn.chunk"
STREAM_END = b'{"end": true}\n'
MAX_PHRASE = 200
_HEADER_LENGTH_LOWER = HEADER_LENGTH.lower()
# The worker's root logger writes to TorchServe's model log at INFO; mfn's records go there too.
_LOGGER = logging.getLogger("mfn.server")
PER_REQUEST_MESSAGE = "Backend received inference at"
NO_BODY = ("no request body reached the model: TorchServe reads a body sent as application/x-www-form-urlencoded "
           "(curl's default for -d and --data-binary) as form fields; send Content-Type: application/json, or "
           "application/octet-stream for binary tensor data")


class MfnHandler(BaseHandler):
    """Serves one packaged mfn handler."""

    def initialize(self, context):
        started = time.perf_counter()
        # The worker would json.loads application/json bodies itself, before mfn can check their size
        # and nesting (a deep body raises RecursionError there and is parsed twice). It reads this
        # switch per request, and the process serves this model alone, so bodies arrive as raw bytes.
        os.environ["TS_DECODE_INPUT_REQUEST"] = "false"
        # TorchServe's worker logs a line per request at INFO through the root logger ("Backend received
        # inference at: ..."). A filter on the root logger drops that one message and nothing else: records
        # of the handler's own loggers pass through the root's handlers, not its filters.
        logging.getLogger().addFilter(_not_per_request)
        properties = context.system_properties
        gpu_id = properties.get("gpu_id")
        device = f"cuda:{gpu_id}" if gpu_id is not None and _cuda_available() else "cpu"
        self.model = load_bundle(
            Path(properties["model_dir"]),
            device=device,
            instance=f"worker-{os.getpid()}",
            metrics=TorchServeMetricFactory(context),
        )
        self.model.warm_up()  # before initialize returns: the worker is not ready until then
        self.answer = self.model.answer
        # TorchServe's frontend already refused bodies over the deployment's max_request_size (413), which may
        # be above mfn's default; nesting and element limits stay mfn's.
        self.codec = ServerCodec(self.model.spec, replace(DEFAULT_LIMITS, max_body_bytes=sys.maxsize))
        self.streaming = self.model.spec.streaming
        cold_start.record(self.model.spec.name, self.model.spec.version,
                          cold_start.with_adapter_share(self.model.timings, _MFN_IMPORT_S + time.perf_counter() - started))
        self.initialized = True

    def handle(self, data, context):
        in_flight = self.model.loop.metrics.in_flight
        in_flight.add(len(data))
        try:
            decoded = [self._decode(index, row, context) for index, row in enumerate(data)]
            if self.streaming:
                return self._stream(decoded, context)
            outcomes = self.answer([item if isinstance(item, RequestFailure) else item.arrays for item in decoded])
            return [self._encode(index, item, outcome, context) for index, (item, outcome) in enumerate(zip(decoded, outcomes))]
        finally:
            in_flight.add(-len(data))

    def _stream(self, decoded, context):
        """Intermediate responses, one per chunk and request, as the handler yields them; the returned list (which
        TorchServe sends last, to every request of the batch at once) ends each request. TorchServe gives the
        worker no cancellation signal: a request whose client left runs with its batch to the end."""
        from ts.handler_utils.utils import send_intermediate_predict_response

        finals = [STREAM_END] * len(decoded)
        streamed: dict[int, int] = {}  # request position -> chunks sent
        for step in stream(self.model.loop, [item if isinstance(item, RequestFailure) else item.arrays for item in decoded]):
            bodies = {}
            for event in step:
                if isinstance(event.outcome, RequestFailure):
                    finals[event.index] = self._stream_failure(event.index, event.outcome, context, event.index in streamed)
                elif event.outcome is not None:
                    streamed[event.index] = number = streamed.get(event.index, 0) + 1
                    bodies[event.index] = self._chunk(event.index, number, decoded[event.index], event.outcome, context)
            if bodies:
                request_ids = {index: context.request_ids[index] for index in bodies}
                send_intermediate_predict_response(bodies, request_ids, "Intermediate response", 200, context)
        return finals

    def _chunk(self, index, number, item, outputs, context):
        try:
            body = self.codec.encode(outputs, item.style)
        except RequestFailure as failure:
            return self.codec.error(failure) + b"\n"
        context.set_response_content_type(index, NDJSON)
        head = b'{"%s": %d' % (CHUNK_KEY.encode(), number)
        return head + (b"}" if body == b"{}" else b", " + body[1:]) + b"\n"

    def _stream_failure(self, index, failure, context, streamed):
        """The last line of a failed stream; before any chunk went out, also the HTTP status, as without streaming."""
        log_failure(_LOGGER, self.model.spec, context.get_request_id(index), failure)
        if not streamed:
            self._fail(index, failure, context)
        return self.codec.error(failure) + b"\n"

    def _decode(self, index, row, context):
        # REST bodies arrive as "body", gRPC ones under the key the client used ("data" for mfn's client).
        # A binary body's header length comes as an HTTP header on REST, as an input-map entry on gRPC.
        body = row.get("body")
        try:
            if body is None:
                if row.get("data") is None:
                    return RequestFailure(NO_BODY)
                return self.codec.decode(row.get("data"), row.get(HEADER_LENGTH))
            return self.codec.decode(body, _request_header(context, index))
        except RequestFailure as failure:
            return failure
        except Exception as error:  # noqa: BLE001 - a fault in mfn itself: it fails this request, not the whole batch
            return RequestFailure(f"could not decode the request: {type(error).__name__}: {error}", status=500)

    def _encode(self, index, item, outcome, context):
        if not isinstance(outcome, RequestFailure):
            try:
                body, header_length = self.codec.encode_answer(outcome, item)
                if header_length is None:
                    context.set_response_content_type(index, JSON)
                else:
                    context.set_response_content_type(index, OCTET_STREAM)
                    context.set_response_header(index, HEADER_LENGTH, str(header_length))
                return body
            except RequestFailure as failure:
                outcome = failure
            except Exception as error:  # noqa: BLE001 - a fault in mfn itself: it fails this answer, not the whole batch
                outcome = RequestFailure(f"could not encode the answer: {type(error).__name__}: {error}", status=500)
        self._fail(index, outcome, context)
        log_failure(_LOGGER, self.model.spec, context.get_request_id(index), outcome)
        return self.codec.error(outcome)

    @staticmethod
    def _fail(index, failure, context):
        context.set_response_content_type(index, JSON)
        # The phrase becomes the HTTP reason phrase: one line of ASCII (Netty refuses CR/LF); the body keeps
        # the message as is.
        phrase = " ".join(failure.message.split())[:MAX_PHRASE].encode("ascii", "backslashreplace").decode("ascii")
        context.set_response_status(code=failure.status, phrase=phrase, idx=index)


def _not_per_request(record):
    return not (isinstance(record.msg, str) and record.msg.startswith(PER_REQUEST_MESSAGE))


def _request_header(context, index):
    """The binary header length a REST request came with; HTTP header names are case-insensitive."""
    headers = context.get_all_request_header(index)
    value = headers.get(HEADER_LENGTH)
    if value is None:
        for name, candidate in headers.items():
            if name.lower() == _HEADER_LENGTH_LOWER:
                return candidate
    return value


def _cuda_available():
    import torch

    return torch.cuda.is_available()
