"""Streams from streaming model functions, for mfn.Client.stream: one iterator of output dicts per call.

- Triton gRPC: ModelStreamInfer on a stream of its own (closing the iterator cancels the request on the server).
- Triton HTTP: the generate_stream extension (server-sent events). It carries one row per request as flat JSON
  values; the client gives the outputs their declared shapes back from the model's metadata.
- TorchServe REST: a chunked answer, one JSON document per line; gRPC: StreamPredictions, one document per message.
  mfn's adapter ends a stream with an {"end": true} line, or an {"error": ...} line.

A stream is never retried: chunks already handed to the caller cannot be taken back.
"""

from __future__ import annotations

import http.client
import json
import queue
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from mfn.client.endpoints import Endpoint
from mfn.errors import InvokeError
from mfn.servers.http import error_message

STREAM_END = "end"
SSE_DATA = b"data: "


def triton_grpc(endpoint: Endpoint, model: str, arrays: Mapping[str, np.ndarray], datatypes: Mapping[str, str],  # noqa: PLR0913
                version: int | None, timeout_s: float, headers: dict[str, str] | None) -> Iterator[dict[str, np.ndarray]]:
    """Chunks of one request over ModelStreamInfer (`headers`: the key, as the transport sends it); each arrives
    when Triton sends it."""
    import tritonclient.grpc as grpcclient

    answers: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(endpoint.address)
    inputs = []
    for name, array in arrays.items():
        infer_input = grpcclient.InferInput(name, list(array.shape), datatypes[name])
        infer_input.set_data_from_numpy(array)
        inputs.append(infer_input)
    finished = False
    try:
        client.start_stream(callback=lambda result, error: answers.put((result, error)), headers=headers)
        client.async_stream_infer(model, inputs, model_version=str(version or ""), enable_empty_final_response=True)
        while True:
            try:
                result, error = answers.get(timeout=timeout_s)
            except queue.Empty:
                raise InvokeError(f"{model} at {endpoint}: no chunk within {timeout_s:g} s") from None
            if error is not None:
                finished = True
                raise InvokeError(f"{model} at {endpoint}: {error.message() or error}")
            response = result.get_response()
            if response.outputs:
                yield {output.name: result.as_numpy(output.name) for output in response.outputs}
            if response.parameters["triton_final_response"].bool_param:
                finished = True
                return
    finally:
        # Closing early (the caller stopped reading) cancels the request: Triton tells the model between chunks.
        client.stop_stream(cancel_requests=not finished)
        client.close()


def triton_http(endpoint: Endpoint, model: str, arrays: Mapping[str, np.ndarray], metadata: dict,  # noqa: PLR0913
                version: int | None, timeout_s: float) -> Iterator[dict[str, np.ndarray]]:
    """Chunks of one request through generate_stream; one row per request (its inputs are flat JSON values)."""
    rows = {array.shape[0] for array in arrays.values()}
    if rows != {1}:
        raise InvokeError(f"{model}: Triton streams over HTTP one row per request (generate_stream takes flat values); "
                          f"send one row, or stream over gRPC (protocol='grpc') for {max(rows)} rows at once")
    body = {name: _flat_json(array) for name, array in arrays.items()}
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/generate_stream"
    shapes = {output["name"]: [1 if dim == -1 and index == 0 else dim for index, dim in enumerate(output["shape"])]
              for output in metadata["outputs"]}
    datatypes = {output["name"]: output["datatype"] for output in metadata["outputs"]}
    for document in _sse_documents(endpoint, path, json.dumps(body).encode(), timeout_s, model):
        yield {name: _shaped(document[name], datatypes[name], shapes[name]) for name in shapes if name in document}


def torchserve(endpoint: Endpoint, channel: Any, model: str, body: Any, version: int | None,  # noqa: PLR0913
               timeout_s: float) -> Iterator[dict[str, np.ndarray]]:
    """Chunks of one request to a streaming mfn model on TorchServe, over REST or gRPC."""
    from mfn.runtime.codec.client import answer_outputs
    from mfn.runtime.loop import RequestFailure

    lines = (channel.stream(model, body, version, endpoint.token(), timeout_s) if endpoint.protocol == "grpc"
             else _rest_lines(endpoint, f"/predictions/{model}" + (f"/{version}" if version else ""), body, timeout_s, model))
    for line in lines:
        if not line.strip():
            continue
        document = json.loads(line)
        if document.get(STREAM_END) is True:
            return
        if "error" in document:
            raise InvokeError(f"{model} at {endpoint}: {document['error']}")
        try:
            yield answer_outputs(document)
        except RequestFailure as failure:
            raise InvokeError(f"{model} at {endpoint}: malformed chunk: {failure.message}") from None


def _rest_lines(endpoint: Endpoint, path: str, body: Any, timeout_s: float, model: str) -> Iterator[bytes]:
    headers = {"Content-Type": "application/octet-stream" if body.header_length is not None else "application/json"}
    if body.header_length is not None:
        from mfn.runtime.codec.binary import HEADER_LENGTH

        headers[HEADER_LENGTH] = str(body.header_length)
    response, connection = _open(endpoint, "POST", path, body.data, headers, timeout_s, model)
    try:
        while line := response.readline():
            yield line
    finally:
        connection.close()  # early: the server sees the client go (TorchServe's worker still runs the batch out)


def _sse_documents(endpoint: Endpoint, path: str, data: bytes, timeout_s: float, model: str) -> Iterator[dict]:
    response, connection = _open(endpoint, "POST", path, data, {"Content-Type": "application/json"}, timeout_s, model)
    try:
        while line := response.readline():
            if not line.startswith(SSE_DATA):
                continue
            document = json.loads(line[len(SSE_DATA):])
            if "error" in document:
                raise InvokeError(f"{model} at {endpoint}: {document['error']}")
            yield document
    finally:
        connection.close()  # early: Triton cancels the request, and the model sees it between chunks


def _open(endpoint: Endpoint, method: str, path: str, data: bytes, headers: dict[str, str], timeout_s: float,  # noqa: PLR0913
          model: str) -> tuple[http.client.HTTPResponse, http.client.HTTPConnection]:
    token = endpoint.token()
    if token:
        headers = {**headers, "Authorization": f"Bearer {token}"}
    connection = http.client.HTTPConnection(endpoint.address, timeout=timeout_s)
    try:
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
    except TimeoutError:
        connection.close()
        raise InvokeError(f"{model} at {endpoint}: no answer within {timeout_s:g} s") from None
    except (OSError, http.client.HTTPException) as error:
        connection.close()
        raise InvokeError(f"{model} at {endpoint}: no connection: {error}") from None
    if response.status >= 400:
        reply = response.read()
        connection.close()
        raise InvokeError(f"{model} at {endpoint}: HTTP {response.status}: "
                          f"{error_message(reply, first_line=True, fallback=response.reason)}")
    return response, connection


def _flat_json(array: np.ndarray) -> Any:
    values = array.reshape(-1)
    if values.dtype.kind in "SO":
        values = np.array([value.decode() if isinstance(value, bytes) else value for value in values], dtype=object)
    listed = values.tolist()
    return listed[0] if len(listed) == 1 else listed


def _shaped(value: Any, datatype: str, shape: list[int]) -> np.ndarray:
    from mfn.handlers.dtypes import numpy_dtype

    if datatype == "BYTES":
        flat = np.array([item.encode() if isinstance(item, str) else item for item in np.atleast_1d(value).tolist()],
                        dtype=object)
    else:
        flat = np.atleast_1d(np.asarray(value, dtype=numpy_dtype(datatype)))
    return flat.reshape([-1 if dim == -1 else dim for dim in shape]) if shape.count(-1) <= 1 else flat.reshape(1, -1)
