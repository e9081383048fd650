"""mfn.Client: call model functions over KServe v2 HTTP or gRPC with numpy arrays in and out."""

from __future__ import annotations

import time
from collections.abc import Mapping
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mfn.errors import InvokeError, MfnError
from mfn.handlers.dtypes import numpy_dtype

PROTOCOLS = ("http", "grpc")
SERVERS = ("triton", "torchserve")
RETRYABLE = ("unavailable", "connection refused", "connection reset", "failed to connect", "broken pipe")


@dataclass(frozen=True)
class Endpoint:
    """Where to reach a server for one protocol, and which server API it speaks."""

    protocol: str
    address: str
    server: str = "triton"
    token: Callable[[], str | None] = field(default=lambda: None, compare=False, repr=False)

    def __str__(self) -> str:
        return f"{self.protocol}://{self.address}"


class Client:
    """Invoke model functions served by a local deployment or at a URL.

    Args:
        target: A URL (`http://host:port`, `grpc://host:port`, or `host:port` for `protocol`), the name of a
            local deployment, or None to find the local deployment serving each model.
        protocol: "http" or "grpc".
        server: API spoken at a URL target: "triton" (KServe v2) or "torchserve"; local deployments say their own.
        timeout_s: Limit for each call, connection included.
        retries: Extra attempts when the server is unreachable (e.g. restarting); other errors are not retried.
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        protocol: str = "http",
        server: str = "triton",
        timeout_s: float = 30.0,
        retries: int = 2,
    ) -> None:
        if protocol not in PROTOCOLS:
            raise MfnError(f"unknown protocol {protocol!r}: use http or grpc")
        if server not in SERVERS:
            raise MfnError(f"unknown server {server!r}: use triton or torchserve")
        self.target = target
        self.protocol = protocol
        self.server = server
        self.timeout_s = timeout_s
        self.retries = retries
        self._clients: dict[str, Any] = {}
        self._metadata: dict[tuple[str, str, str], dict] = {}

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every connection; open HTTP keep-alives would otherwise delay a server's shutdown."""
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    def endpoint(self, model: str) -> Endpoint:
        """The endpoint this client uses for `model`."""
        target = self.target
        if target and "://" in target:
            scheme, _, address = target.partition("://")
            if scheme not in PROTOCOLS:
                raise MfnError(f"URL scheme {scheme!r} in {target!r}: use http:// or grpc://")
            return Endpoint(scheme, address.rstrip("/"), self.server)
        if target and ":" in target:
            return Endpoint(self.protocol, target, self.server)
        from mfn.deploy import state

        deployment = state.get(target) if target else state.find_serving(model)
        address = f"{deployment.host}:{deployment.ports[self.protocol]}"
        if deployment.server == "torchserve":
            from mfn.deploy.torchserve_local import read_key

            return Endpoint(self.protocol, address, "torchserve", lambda: read_key(deployment, "inference"))
        return Endpoint(self.protocol, address)

    def metadata(self, model: str, version: int | None = None) -> dict:
        """The model's KServe v2 metadata: name, versions, inputs and outputs with datatypes and shapes (Triton)."""
        endpoint = self.endpoint(model)
        if endpoint.server != "triton":
            raise MfnError(f"{model} at {endpoint}: TorchServe publishes no tensor metadata; see the handler's declaration")
        key = (str(endpoint), model, str(version or ""))
        if key not in self._metadata:
            self._metadata[key] = self._call(
                endpoint, model, lambda client: client.get_model_metadata(model, str(version or ""), **self._metadata_kwargs(endpoint))
            )
        return self._metadata[key]

    def infer(
        self,
        model: str,
        inputs: Mapping[str, Any],
        version: int | None = None,
        outputs: list[str] | None = None,
    ) -> dict[str, np.ndarray]:
        """Run one request and return its outputs by name.

        Inputs may be arrays or nested lists; they are cast to the model's declared dtypes, and a single
        row given without its batch dimension gets one.

        Raises:
            InvokeError: with the server's reason when the request fails.
        """
        endpoint = self.endpoint(model)
        if endpoint.server == "torchserve":
            return self._infer_torchserve(endpoint, model, inputs, version, outputs)
        metadata = self.metadata(model, version)
        arrays = coerce_inputs(inputs, metadata)
        module = _protocol_module(endpoint.protocol)
        infer_inputs = []
        for name, array in arrays.items():
            infer_input = module.InferInput(name, list(array.shape), _datatype(metadata, name))
            infer_input.set_data_from_numpy(array)
            infer_inputs.append(infer_input)
        wanted = outputs or [tensor["name"] for tensor in metadata["outputs"]]
        requested = [module.InferRequestedOutput(name) for name in wanted]

        def call(client: Any) -> Any:
            return client.infer(model, infer_inputs, model_version=str(version or ""), outputs=requested, **self._infer_kwargs(endpoint))

        result = self._call(endpoint, model, call)
        return {name: result.as_numpy(name) for name in wanted}

    def _infer_torchserve(
        self, endpoint: Endpoint, model: str, inputs: Mapping[str, Any], version: int | None, outputs: list[str] | None
    ) -> dict[str, np.ndarray]:
        from mfn import torchserve_client

        body = torchserve_client.request_body({name: np.asarray(value) for name, value in inputs.items()})
        for attempt in range(self.retries + 1):
            try:
                if endpoint.protocol == "grpc":
                    reply = self._grpc_channel(endpoint).infer(model, body, version, endpoint.token(), self.timeout_s)
                else:
                    reply = torchserve_client.rest_infer(endpoint.address, model, body, version, endpoint.token(), self.timeout_s)
                return torchserve_client.parse_response(reply, outputs)
            except torchserve_client.Unavailable as error:
                if attempt == self.retries:
                    raise InvokeError(f"{model} at {endpoint}: unavailable after {attempt + 1} attempts: {error}") from None
                time.sleep(0.5 * 2**attempt)
            except InvokeError as error:
                raise InvokeError(f"{model} at {endpoint}: {error}") from None
        raise AssertionError("unreachable")

    def _grpc_channel(self, endpoint: Endpoint) -> Any:
        key = str(endpoint)
        if key not in self._clients:
            from mfn import torchserve_client
            from mfn.deploy.state import mfn_home

            self._clients[key] = torchserve_client.GrpcChannel(endpoint.address, mfn_home() / "cache")
        return self._clients[key]

    def _call(self, endpoint: Endpoint, model: str, call: Any) -> Any:
        from tritonclient.utils import InferenceServerException

        for attempt in range(self.retries + 1):
            try:
                return call(self._client(endpoint))
            except InferenceServerException as error:
                message = error.message() or str(error)
                if attempt < self.retries and any(word in message.lower() for word in RETRYABLE):
                    self._clients.pop(str(endpoint)).close()
                    time.sleep(0.2 * 2**attempt)
                    continue
                raise InvokeError(f"{model} at {endpoint}: {message}") from None
        raise AssertionError("unreachable")

    def _client(self, endpoint: Endpoint) -> Any:
        key = str(endpoint)
        if key not in self._clients:
            module = _protocol_module(endpoint.protocol)
            if endpoint.protocol == "http":
                self._clients[key] = module.InferenceServerClient(
                    endpoint.address, connection_timeout=self.timeout_s, network_timeout=self.timeout_s
                )
            else:
                self._clients[key] = module.InferenceServerClient(endpoint.address)
        return self._clients[key]

    def _metadata_kwargs(self, endpoint: Endpoint) -> dict:
        return {"as_json": True, "client_timeout": self.timeout_s} if endpoint.protocol == "grpc" else {}

    def _infer_kwargs(self, endpoint: Endpoint) -> dict:
        return {"client_timeout": self.timeout_s} if endpoint.protocol == "grpc" else {}


def coerce_inputs(inputs: Mapping[str, Any], metadata: dict) -> dict[str, np.ndarray]:
    """Cast inputs to the model's datatypes, adding the batch dimension to a single row."""
    declared = {tensor["name"]: tensor for tensor in metadata["inputs"]}
    unknown = sorted(set(inputs) - set(declared))
    if unknown:
        raise InvokeError(f"{metadata['name']} has no input(s) {unknown}; its inputs are {sorted(declared)}")
    arrays = {}
    for name, value in inputs.items():
        tensor = declared[name]
        if tensor["datatype"] == "BYTES":
            array = np.vectorize(_to_bytes, otypes=[object])(np.asarray(value, dtype=object))
        else:
            array = np.asarray(value, dtype=numpy_dtype(tensor["datatype"]))
        if array.ndim == len(tensor["shape"]) - 1:
            array = array[np.newaxis]
        arrays[name] = array
    return arrays


def _to_bytes(value: Any) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def _datatype(metadata: dict, name: str) -> str:
    return next(tensor["datatype"] for tensor in metadata["inputs"] if tensor["name"] == name)


def _protocol_module(protocol: str) -> Any:
    if protocol == "http":
        import tritonclient.http as module
    else:
        import tritonclient.grpc as module
    return module
