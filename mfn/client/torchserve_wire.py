"""Calls to TorchServe: REST `/predictions` and the gRPC InferenceAPIsService, KServe v2 bodies.

Tensors travel as KServe v2 binary tensor data by default (a JSON header, then raw bytes; see
mfn.runtime.codec.binary), or as KServe v2 JSON. REST calls reuse kept-alive HTTP/1.1 connections.
The gRPC messages come from the `inference.proto` inside the installed TorchServe jar, compiled with
grpcio-tools into a descriptor set on first use and cached, so they always match the server.
"""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
import tempfile
import threading
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mfn.errors import CallError, InvokeError, NoAnswer
from mfn.runtime.codec.binary import HEADER_LENGTH, OCTET_STREAM, split_answer
from mfn.runtime.codec.client import answer_outputs, binary_answer_outputs, encode_binary_request, encode_request, read_answer
from mfn.runtime.loop import RequestFailure
from mfn.servers.http import error_message

SERVICE = "org.pytorch.serve.grpc.inference.InferenceAPIsService"
PROTO = "proto/inference.proto"
PROTO_DEPENDENCIES = ("google/rpc/status.proto",)
TOO_LARGE_HINT = ("max_request_size in config.properties): send fewer rows per request, or raise the limit "
                  "(`mfn deploy --max-request-mb`, or the model's max_request_mb")


@dataclass(frozen=True)
class Body:
    """A request body and, for binary tensor data, its JSON header's length."""

    data: bytes
    header_length: int | None = None


def request_body(arrays: Mapping[str, np.ndarray], binary: bool = True) -> Body:
    """A KServe v2 request: binary tensor data, or JSON; datatypes are the arrays' own (binary) or left to the server.

    Raises:
        InvokeError: naming the input when a value cannot be sent as JSON (bytes that are not UTF-8 text).
    """
    if binary:
        return Body(*encode_binary_request(arrays))
    try:
        return Body(encode_request(arrays))
    except RequestFailure as failure:
        raise InvokeError(failure.message) from None


def parse_response(body: bytes, header_length: int | None, wanted: list[str] | None, binary: bool = True) -> dict[str, np.ndarray]:
    """The outputs of TorchServe's answer, or InvokeError with the reason it gives for refusing the request.

    `header_length` is the answer's `Inference-Header-Content-Length` where a header carried it; a gRPC
    answer to a binary request has none, and its JSON header is read as the object the body starts with.
    """
    try:
        if binary:
            document, rest = split_answer(body, header_length)
        else:
            document = read_answer(body)
        if "error" in document:
            # TorchServe's gRPC API drops the per-request status the handler sets; the body still says what failed.
            raise InvokeError(str(document["error"]))
        return binary_answer_outputs(document, rest, wanted) if binary else answer_outputs(document, wanted)
    except RequestFailure as failure:
        raise InvokeError(f"malformed answer from TorchServe: {failure.message}") from None


class RestConnections:
    """Kept-alive HTTP/1.1 connections to one TorchServe inference address, one per concurrent call.

    Args:
        address: host:port of the inference API.
        timeout_s: Limit for connecting and for each read.
    """

    def __init__(self, address: str, timeout_s: float) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def infer(self, model: str, body: Body, version: int | None, token: str | None) -> tuple[bytes, int | None]:
        """POST /predictions/<model>[/<version>]: the answer's body and its binary header length, if any.

        Raises:
            CallError: with the HTTP status and TorchServe's message, or "connection"/"timeout" when none came.
        """
        path = f"/predictions/{model}" + (f"/{version}" if version else "")
        headers = {"Content-Type": OCTET_STREAM if body.header_length is not None else "application/json"}
        if body.header_length is not None:
            headers[HEADER_LENGTH] = str(body.header_length)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        connection, reused = self._take()
        try:
            try:
                status, reason, reply, length = self._post(connection, path, body.data, headers)
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                if not reused:
                    raise
                # A kept-alive connection the server closed while idle: one fresh try, as browsers do.
                connection.close()
                connection = self._connect()
                status, reason, reply, length = self._post(connection, path, body.data, headers)
        except TimeoutError:
            connection.close()
            raise CallError(f"no answer within {self.timeout_s:g} s", NoAnswer.TIMEOUT) from None
        except (OSError, http.client.HTTPException) as error:
            connection.close()
            raise CallError(f"no connection: {error}", NoAnswer.CONNECTION) from None
        self._give_back(connection)
        if status == 413 and not reply:  # the frontend refused the body before any handler saw it
            raise CallError(f"HTTP 413: a request of {len(body.data):,} bytes is over the server's body limit "
                            f"({TOO_LARGE_HINT})", "413")
        if status >= 400:
            raise CallError(f"HTTP {status}: {error_message(reply, first_line=True, fallback=reason)}", str(status))
        return reply, length

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def _post(self, connection: http.client.HTTPConnection, path: str, data: bytes,
              headers: dict[str, str]) -> tuple[int, str, bytes, int | None]:
        connection.request("POST", path, body=data, headers=headers)
        response = connection.getresponse()
        reply = response.read()
        length = response.getheader(HEADER_LENGTH)
        if response.will_close:
            connection.close()
        return response.status, response.reason, reply, int(length) if length and length.isdigit() else None

    def _take(self) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        return self._connect(), False

    def _connect(self) -> http.client.HTTPConnection:
        connection = http.client.HTTPConnection(self.address, timeout=self.timeout_s)
        try:
            connection.connect()
        except TimeoutError:
            raise CallError(f"no connection within {self.timeout_s:g} s", NoAnswer.TIMEOUT) from None
        except OSError as error:
            raise CallError(f"no connection: {error}", NoAnswer.CONNECTION) from None
        # Headers and body go out in one send for small requests; no Nagle delay for the last segment.
        connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection

    def _give_back(self, connection: http.client.HTTPConnection) -> None:
        if connection.sock is None:
            return
        with self._lock:
            self._idle.append(connection)


class GrpcChannel:
    """One gRPC channel to TorchServe's inference service."""

    def __init__(self, address: str, cache_dir: Path) -> None:
        import grpc

        self._grpc = grpc
        self.channel = grpc.insecure_channel(address)
        request_type, response_type = message_classes(cache_dir)
        self._request_type = request_type
        self._predictions: Callable[..., Any] = self.channel.unary_unary(
            f"/{SERVICE}/Predictions",
            request_serializer=request_type.SerializeToString,
            response_deserializer=response_type.FromString,
        )
        self._stream_predictions: Callable[..., Any] = self.channel.unary_stream(
            f"/{SERVICE}/StreamPredictions",
            request_serializer=request_type.SerializeToString,
            response_deserializer=response_type.FromString,
        )

    def stream(self, model: str, body: Body, version: int | None, token: str | None, timeout_s: float) -> Iterator[bytes]:
        """StreamPredictions: each message's prediction as it comes; closing the iterator cancels the call.

        Raises:
            InvokeError: with the gRPC code name and TorchServe's message.
        """
        grpc = self._grpc
        call = self._stream_predictions(self._message(model, body, version),
                                        metadata=[("authorization", f"Bearer {token}")] if token else None)
        try:
            for response in call:
                yield response.prediction
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED:
                reason = error_message(error.details() or "", first_line=True, fallback=error.code().name)
                raise InvokeError(f"gRPC {error.code().name}: {reason}") from None
        finally:
            call.cancel()

    def _message(self, model: str, body: Body, version: int | None) -> Any:
        inputs = {"data": body.data}
        if body.header_length is not None:
            inputs[HEADER_LENGTH] = str(body.header_length).encode()
        return self._request_type(model_name=model, model_version=str(version or ""), input=inputs)

    def infer(self, model: str, body: Body, version: int | None, token: str | None, timeout_s: float) -> bytes:
        """One Predictions call; a binary body's header length goes in the input map beside it.

        Raises:
            CallError: with the gRPC code name and TorchServe's message.
        """
        grpc = self._grpc
        message = self._message(model, body, version)
        metadata = [("authorization", f"Bearer {token}")] if token else None
        try:
            prediction: bytes = self._predictions(message, timeout=timeout_s, metadata=metadata).prediction
            return prediction
        except grpc.RpcError as error:
            code = error.code()
            if code == grpc.StatusCode.CANCELLED and "Stream removed" in (error.details() or ""):
                # grpc-java refuses a message over its inbound limit by resetting the stream: the client sees CANCELLED.
                raise CallError(f"gRPC CANCELLED: the server dropped a request of {len(body.data):,} bytes; TorchServe "
                                f"does so for a request over its body limit ({TOO_LARGE_HINT})", code.name) from None
            # TorchServe appends its Java exception's class name on a second line, which is dropped.
            raise CallError(f"gRPC {code.name}: {error_message(error.details() or '', first_line=True, fallback=code.name)}", code.name) from None

    def close(self) -> None:
        self.channel.close()


def message_classes(cache_dir: Path) -> tuple[Any, Any]:
    """PredictionsRequest and PredictionResponse, built from the server's own proto."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    file_set = descriptor_pb2.FileDescriptorSet.FromString(protoset(cache_dir).read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for proto_file in file_set.file:
        pool.Add(proto_file)
    package = SERVICE.rpartition(".")[0]
    request_type, response_type = (
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.{name}"))
        for name in ("PredictionsRequest", "PredictionResponse")
    )
    return request_type, response_type


def protoset(cache_dir: Path) -> Path:
    """Compile TorchServe's inference.proto (from its jar) to a descriptor set once per TorchServe version."""
    import ts

    jar = Path(ts.__file__).parent / "frontend" / "model-server.jar"
    version = (Path(ts.__file__).parent / "version.txt").read_text().strip()
    target = cache_dir / f"torchserve-{version}-inference.protoset"
    if target.is_file():
        return target
    import grpc_tools

    cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with tempfile.TemporaryDirectory(dir=cache_dir) as scratch:
        with zipfile.ZipFile(jar) as archive:
            for name in (PROTO, *PROTO_DEPENDENCIES):
                archive.extract(name, scratch)
        output = Path(scratch) / "inference.protoset"
        include = Path(grpc_tools.__file__).parent / "_proto"
        # protoc runs in its own process: its libprotobuf clashes with TensorFlow's when both are loaded
        # in one process (a segfault), and a client process may well have TensorFlow loaded.
        command = [sys.executable, "-m", "grpc_tools.protoc", f"-I{scratch}", f"-I{include}",
                   f"--descriptor_set_out={output}", "--include_imports", PROTO]
        completed = subprocess.run(command, capture_output=True, text=True, check=False)
        if completed.returncode != 0:
            raise InvokeError(
                f"compiling {PROTO} from {jar} failed (protoc exit {completed.returncode}): {completed.stderr.strip()}"
            )
        output.chmod(0o600)  # like everything else mfn keeps under $MFN_HOME
        output.replace(target)
    return target
