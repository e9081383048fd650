"""KServe v2 through tritonclient (Triton's HTTP and gRPC APIs) for mfn.Client."""

from __future__ import annotations

import http.client
import itertools
import secrets
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import numpy as np

from mfn.client.connections import Connections
from mfn.client.endpoints import Endpoint
from mfn.client.values import arrays_for
from mfn.client.versions import default_version
from mfn.errors import CallError, InvokeError, NoAnswer
from mfn.handlers.declarations import Tensor
from mfn.runtime.loop import tensor_problem

T = TypeVar("T")
Attempt = Callable[[Callable[[Endpoint], T]], T]
# Triton's gRPC endpoint reads a restricted protocol's header under its own prefix.
GRPC_AUTH_HEADER = "triton-grpc-protocol-authorization"


class TritonTransport:
    """Metadata and inference on Triton; tensors binary by default (gRPC carries them as bytes in any case)."""

    def __init__(self, connections: Connections, timeout_s: float, binary: bool) -> None:
        self.connections, self.timeout_s, self.binary = connections, timeout_s, binary
        # Each request carries an id (Triton logs it beside a handler's failure): this client's prefix, then a count.
        # (itertools.count, not a generator: next() on it is safe from several threads at once.)
        self._request_prefix, self._request_numbers = f"mfn-{secrets.token_hex(3)}-", itertools.count(1)
        self._metadata: dict[tuple[str, str, str], dict] = {}
        # Derived once per metadata document: each input's (datatype, rank), and its per-row declaration.
        self._declared: dict[tuple[str, str, str], tuple[dict[str, tuple[str, int]], list[Tensor]]] = {}

    def metadata(self, endpoint: Endpoint, model: str, version: int | None, attempt: Attempt) -> dict:
        """The model's KServe v2 metadata, asked once per endpoint, model and version."""
        version = version if version is not None else default_version(endpoint, model)
        return self._metadata_of(endpoint, model, version, attempt)

    def _metadata_of(self, endpoint: Endpoint, model: str, version: int | None, attempt: Attempt) -> dict:
        key = (str(endpoint), model, str(version or ""))
        if key not in self._metadata:
            self._metadata[key] = attempt(lambda current: self._call(current, lambda client: client.get_model_metadata(
                model, str(version or ""), **self._kwargs(current, as_json=True))))
        return self._metadata[key]

    def infer(  # noqa: PLR0913
        self, endpoint: Endpoint, model: str, inputs: Mapping[str, Any], version: int | None, outputs: list[str] | None,
        attempt: Attempt,
    ) -> dict[str, np.ndarray]:
        version = version if version is not None else default_version(endpoint, model)
        metadata, declared, arrays = self._checked(endpoint, model, inputs, version, attempt)
        module = protocol_module(endpoint.protocol)
        http_api = endpoint.protocol == "http"
        binary = self.binary or not http_api
        infer_inputs = []
        for name, array in arrays.items():
            infer_input = module.InferInput(name, list(array.shape), declared[name][0])
            if http_api:
                infer_input.set_data_from_numpy(array, binary_data=binary)
            else:
                infer_input.set_data_from_numpy(array)
            infer_inputs.append(infer_input)
        wanted = outputs or [tensor["name"] for tensor in metadata["outputs"]]
        requested = [module.InferRequestedOutput(name, binary_data=binary) if http_api else module.InferRequestedOutput(name)
                     for name in wanted]
        request_id = f"{self._request_prefix}{next(self._request_numbers)}"
        result = attempt(lambda current: self._call(current, lambda client: client.infer(
            model, infer_inputs, model_version=str(version or ""), outputs=requested, request_id=request_id,
            **self._kwargs(current))))
        answers = {name: result.as_numpy(name) for name in wanted}
        if not binary:
            # tritonclient gives JSON BYTES outputs back as text: mfn gives BYTES as bytes whatever the wire.
            answers = {name: _text_to_bytes(array) for name, array in answers.items()}
        return answers

    def stream(
        self, endpoint: Endpoint, model: str, inputs: Mapping[str, Any], version: int | None, attempt: Attempt
    ) -> Iterator[dict[str, np.ndarray]]:
        """A streaming model's chunks: gRPC ModelStreamInfer, or HTTP generate_stream (see mfn.client.streams)."""
        from mfn.client import streams

        version = version if version is not None else default_version(endpoint, model)
        metadata, declared, arrays = self._checked(endpoint, model, inputs, version, attempt)
        if endpoint.protocol == "grpc":
            datatypes = {name: datatype for name, (datatype, _) in declared.items()}
            headers = self._kwargs(endpoint).get("headers")
            return streams.triton_grpc(endpoint, model, arrays, datatypes, version, self.timeout_s, headers)
        return streams.triton_http(endpoint, model, arrays, metadata, version, self.timeout_s)

    def _checked(self, endpoint: Endpoint, model: str, inputs: Mapping[str, Any], version: int | None,
                 attempt: Attempt) -> tuple[dict, dict[str, tuple[str, int]], dict[str, np.ndarray]]:
        """The model's metadata, its inputs' (datatype, rank), and `inputs` as arrays checked against them."""
        metadata = self._metadata_of(endpoint, model, version, attempt)  # `version` already names the default
        key = (str(endpoint), model, str(version or ""))
        if key not in self._declared:
            self._declared[key] = (
                {tensor["name"]: (tensor["datatype"], len(tensor["shape"])) for tensor in metadata["inputs"]},
                _per_row_declarations(metadata),
            )
        declared, per_row = self._declared[key]
        arrays = arrays_for(model, inputs, declared)
        _check_shapes(model, arrays, per_row)
        return metadata, declared, arrays

    def served_models(self, endpoint: Endpoint) -> list[str] | None:
        """The models Triton at `endpoint` has ready (its repository index), or None where it does not say."""
        try:
            index = self._call(endpoint, lambda client: client.get_model_repository_index(**self._kwargs(endpoint, as_json=True)))
        except CallError:
            return None
        entries = index.get("models", []) if isinstance(index, dict) else index
        return sorted({entry["name"] for entry in entries if entry.get("state") == "READY"})

    def speaks_triton(self, endpoint: Endpoint) -> bool:
        """Whether the server at `endpoint` answers Triton's health check (asked when another API was expected)."""
        module = protocol_module(endpoint.protocol)
        # Not one of the client's connections: those at this address are the other API's.
        client = (module.InferenceServerClient(endpoint.address, connection_timeout=5.0, network_timeout=5.0)
                  if endpoint.protocol == "http" else module.InferenceServerClient(endpoint.address))
        headers = self._kwargs(endpoint).get("headers")
        try:
            return bool(triton_errors(lambda: client.is_server_live(headers=headers)))
        except CallError:
            return False
        finally:
            client.close()

    def reset(self, endpoint: Endpoint) -> None:
        """After a failure: this thread's HTTP client is replaced; gRPC channels recover by themselves."""
        if _per_thread(endpoint):
            self.connections.drop(str(endpoint))

    def _call(self, endpoint: Endpoint, call: Callable[[Any], T]) -> T:
        return triton_errors(lambda: call(self._client(endpoint)))

    def _client(self, endpoint: Endpoint) -> Any:
        module = protocol_module(endpoint.protocol)
        if endpoint.protocol == "http":
            return self.connections.get(str(endpoint), lambda: module.InferenceServerClient(
                endpoint.address, connection_timeout=self.timeout_s, network_timeout=self.timeout_s), per_thread=True)
        return self.connections.get(str(endpoint), lambda: module.InferenceServerClient(endpoint.address))

    def _kwargs(self, endpoint: Endpoint, as_json: bool = False) -> dict:
        kwargs: dict[str, Any] = {}
        if endpoint.protocol == "grpc":
            kwargs["client_timeout"] = self.timeout_s
            if as_json:
                kwargs["as_json"] = True
        token = endpoint.token()
        if token:
            header = GRPC_AUTH_HEADER if endpoint.protocol == "grpc" else "authorization"
            kwargs["headers"] = {header: f"Bearer {token}"}
        return kwargs


def _check_shapes(model: str, arrays: dict[str, np.ndarray], per_row: list[Tensor]) -> None:
    """Refuse a shape the model does not take before Triton does, in the words TorchServe's adapter uses
    (Triton's own answer names its internals: "try setting max_batch_size to zero")."""
    for tensor in per_row:
        array = arrays.get(tensor.name)
        problem = None if array is None else tensor_problem(array, tensor)
        if problem:
            raise InvokeError(f"{model}: input {problem}")


def _per_row_declarations(metadata: dict) -> list[Tensor]:
    """Inputs as mfn declares them (per row) from KServe v2 metadata of a batching model, whose shapes start with
    the batch dimension (-1); a model without batching has no per-row form and is left to the server."""
    declared = []
    for tensor in metadata["inputs"]:
        shape = tensor["shape"]
        if not shape or int(shape[0]) != -1:
            return []
        try:
            declared.append(Tensor(tensor["name"], tensor["datatype"], [int(dim) for dim in shape[1:]]))
        except ValueError:
            return []  # a datatype or shape mfn does not declare: the server judges
    return declared


def _per_thread(endpoint: Endpoint) -> bool:
    """tritonclient.http's client runs on gevent and must stay on the thread that made it."""
    return endpoint.protocol == "http"


def _text_to_bytes(array: np.ndarray) -> np.ndarray:
    if array.dtype != object or not any(isinstance(item, str) for item in array.flat):
        return array
    encoded = np.empty(array.shape, dtype=object)
    encoded.flat[:] = [item.encode("utf-8") if isinstance(item, str) else item for item in array.flat]
    return encoded


def triton_errors(call: Callable[[], T]) -> T:
    """Run a tritonclient call, turning its failures into CallError for the retry policy."""
    from tritonclient.utils import InferenceServerException

    try:
        return call()
    except InferenceServerException as error:
        lines, status = (error.message() or "").strip().splitlines(), error.status()
        message = lines[0] if lines else "no reason given"
        if status is None:  # refused by tritonclient itself, before sending
            raise CallError(message, NoAnswer.CLIENT) from None
        status = status.removeprefix("StatusCode.")
        # Said the way TorchServe failures are: "HTTP 400: ..." or "gRPC UNAVAILABLE: ...".
        raise CallError(f"{'HTTP' if status.isdigit() else 'gRPC'} {status}: {message}", status) from None
    except TimeoutError:
        raise CallError("no answer in time", NoAnswer.TIMEOUT) from None
    except (OSError, http.client.HTTPException) as error:
        # tritonclient.http lets socket errors through (connection refused, reset, unreachable), and its
        # geventhttpclient says "connection closed." with an HTTPException when a server died mid-answer.
        raise CallError(f"no connection: {error}", NoAnswer.CONNECTION) from None


def protocol_module(protocol: str) -> Any:
    if protocol == "http":
        import tritonclient.http as module
    else:
        import tritonclient.grpc as module
    return module
