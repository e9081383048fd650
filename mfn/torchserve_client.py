"""Calls to TorchServe: REST `/predictions` and the gRPC InferenceAPIsService, KServe v2 JSON bodies.

The gRPC messages come from the `inference.proto` inside the installed TorchServe jar, compiled with
grpcio-tools into a descriptor set on first use and cached, so they always match the server.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mfn.errors import CallError, InvokeError
from mfn.runtime.codec.client import answer_outputs, encode_request, read_answer
from mfn.runtime.loop import RequestFailure

SERVICE = "org.pytorch.serve.grpc.inference.InferenceAPIsService"
PROTO = "proto/inference.proto"
PROTO_DEPENDENCIES = ("google/rpc/status.proto",)


def request_body(arrays: Mapping[str, np.ndarray]) -> bytes:
    """A KServe v2 JSON request; datatypes are left to the server, which holds the declared ones.

    Raises:
        InvokeError: naming the input when a value cannot be sent as JSON (bytes that are not UTF-8 text).
    """
    try:
        return encode_request(arrays)
    except RequestFailure as failure:
        raise InvokeError(failure.message) from None


def parse_response(body: bytes, wanted: list[str] | None) -> dict[str, np.ndarray]:
    """The outputs of TorchServe's answer, or InvokeError with the reason it gives for refusing the request."""
    try:
        document = read_answer(body)
        if "error" in document:
            # TorchServe's gRPC API drops the per-request status the handler sets; the body still says what failed.
            raise InvokeError(str(document["error"]))
        return answer_outputs(document, wanted)
    except RequestFailure as failure:
        raise InvokeError(f"malformed answer from TorchServe: {failure.message}") from None


def rest_infer(
    address: str, model: str, body: bytes, version: int | None, token: str | None, timeout_s: float
) -> bytes:
    """POST /predictions/<model>[/<version>].

    Raises:
        CallError: with the HTTP status and TorchServe's message, or "connection"/"timeout" when none came.
    """
    url = f"http://{address}/predictions/{model}" + (f"/{version}" if version else "")
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body, headers=headers), timeout=timeout_s) as reply:
            return reply.read()
    except urllib.error.HTTPError as error:
        raise CallError(f"HTTP {error.code}: {_error_text(error.read(), error.reason)}", str(error.code)) from None
    except TimeoutError:
        raise CallError(f"no answer within {timeout_s:g} s", "timeout") from None
    except (urllib.error.URLError, http.client.HTTPException, ConnectionError) as error:
        # urlopen wraps failures to connect or send in URLError; a connection that breaks later is raised as is.
        raise CallError(f"no connection: {getattr(error, 'reason', error)}", "connection") from None


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

    def infer(self, model: str, body: bytes, version: int | None, token: str | None, timeout_s: float) -> bytes:
        """One Predictions call with a JSON body.

        Raises:
            CallError: with the gRPC code name and TorchServe's message.
        """
        grpc = self._grpc
        message = self._request_type(model_name=model, model_version=str(version or ""), input={"data": body})
        metadata = [("authorization", f"Bearer {token}")] if token else None
        try:
            return self._predictions(message, timeout=timeout_s, metadata=metadata).prediction
        except grpc.RpcError as error:
            code = error.code()
            # TorchServe appends its Java exception's class name on a second line, which _error_text drops.
            raise CallError(f"gRPC {code.name}: {_error_text((error.details() or '').encode(), code.name)}", code.name) from None

    def close(self) -> None:
        self.channel.close()


def message_classes(cache_dir: Path) -> tuple[type, type]:
    """PredictionsRequest and PredictionResponse, built from the server's own proto."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    file_set = descriptor_pb2.FileDescriptorSet.FromString(protoset(cache_dir).read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for proto_file in file_set.file:
        pool.Add(proto_file)
    package = SERVICE.rpartition(".")[0]
    return tuple(  # type: ignore[return-value]
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.{name}"))
        for name in ("PredictionsRequest", "PredictionResponse")
    )


def protoset(cache_dir: Path) -> Path:
    """Compile TorchServe's inference.proto (from its jar) to a descriptor set once per TorchServe version."""
    import ts

    jar = Path(ts.__file__).parent / "frontend" / "model-server.jar"
    version = (Path(ts.__file__).parent / "version.txt").read_text().strip()
    target = cache_dir / f"torchserve-{version}-inference.protoset"
    if target.is_file():
        return target
    import grpc_tools

    cache_dir.mkdir(parents=True, exist_ok=True)
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
        output.replace(target)
    return target


def _error_text(body: bytes, fallback: str) -> str:
    """The message of TorchServe's error body ({"error"} from mfn, {"code", "type", "message"} from TorchServe)."""
    try:
        document = json.loads(body)
        text = str(document.get("error") or document.get("message") or document)
    except (ValueError, AttributeError, RecursionError):
        text = body.decode("utf-8", "replace")
    lines = text.strip().splitlines()
    return lines[0] if lines else fallback
