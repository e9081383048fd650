"""Calls to TorchServe: REST `/predictions` and the gRPC InferenceAPIsService, KServe v2 JSON bodies.

The gRPC messages come from the `inference.proto` inside the installed TorchServe jar, compiled with
grpcio-tools into a descriptor set on first use and cached, so they always match the server.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mfn.errors import InvokeError
from mfn.handlers.dtypes import numpy_dtype

SERVICE = "org.pytorch.serve.grpc.inference.InferenceAPIsService"
PROTO = "proto/inference.proto"
PROTO_DEPENDENCIES = ("google/rpc/status.proto",)


class Unavailable(Exception):
    """The server did not answer (down, restarting, or a worker died): worth retrying."""


def request_body(arrays: dict[str, np.ndarray]) -> bytes:
    """A KServe v2 JSON request; datatypes are left to the server, which casts to the declared ones."""
    inputs = [{"name": name, "shape": list(array.shape), "data": _json_data(array)} for name, array in arrays.items()]
    return json.dumps({"inputs": inputs}).encode()


def parse_response(body: bytes, wanted: list[str] | None) -> dict[str, np.ndarray]:
    document = json.loads(body)
    if "error" in document:
        # TorchServe's gRPC API drops the per-request status the handler sets; the body still says what failed.
        raise InvokeError(str(document["error"]))
    outputs = {}
    for item in document["outputs"]:
        if wanted and item["name"] not in wanted:
            continue
        if item["datatype"] == "BYTES":
            values = np.array([value.encode() for value in item["data"]], dtype=object)
        else:
            values = np.array(item["data"], dtype=numpy_dtype(item["datatype"]))
        outputs[item["name"]] = values.reshape(item["shape"])
    return outputs


def rest_infer(
    address: str, model: str, body: bytes, version: int | None, token: str | None, timeout_s: float
) -> bytes:
    """POST /predictions/<model>[/<version>]; Unavailable when the server cannot answer now."""
    url = f"http://{address}/predictions/{model}" + (f"/{version}" if version else "")
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body, headers=headers), timeout=timeout_s) as reply:
            return reply.read()
    except urllib.error.HTTPError as error:
        message = _error_text(error.read(), error.reason)
        # 507 is TorchServe's "Worker died": the request never ran and a new worker is starting.
        if error.code in (502, 503, 504, 507):
            raise Unavailable(f"HTTP {error.code}: {message}") from None
        raise InvokeError(f"HTTP {error.code}: {message}") from None
    except (urllib.error.URLError, socket.timeout, ConnectionError) as error:
        raise Unavailable(str(getattr(error, "reason", error))) from None


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
        grpc = self._grpc
        message = self._request_type(model_name=model, model_version=str(version or ""), input={"data": body})
        metadata = [("authorization", f"Bearer {token}")] if token else None
        try:
            return self._predictions(message, timeout=timeout_s, metadata=metadata).prediction
        except grpc.RpcError as error:
            code = error.code()
            text = _error_text(error.details().encode(), code.name)
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) or "Worker died" in text:
                raise Unavailable(f"gRPC {code.name}: {text}") from None
            raise InvokeError(f"gRPC {code.name}: {text}") from None

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


def _json_data(array: np.ndarray) -> list:
    if array.dtype == object:
        return [item.decode("utf-8") if isinstance(item, bytes) else item for item in array.ravel().tolist()]
    return array.ravel().tolist()


def _error_text(body: bytes, fallback: str) -> str:
    try:
        document = json.loads(body)
        return str(document.get("error") or document.get("message") or document)
    except (ValueError, AttributeError):
        return body.decode("utf-8", "replace") or fallback
