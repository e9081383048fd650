"""TorchServe's REST and gRPC inference APIs for mfn.Client (the wire format is mfn.client.torchserve_wire's)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from mfn.client.connections import Connections
from mfn.client.endpoints import Endpoint
from mfn.client.values import arrays_for
from mfn.errors import InvokeError, MfnError

T = TypeVar("T")
# How each chunk of a streamed answer from mfn's TorchServe adapter starts (see mfn.archiver.torchserve_adapter).
CHUNK_START = b'{"mfn.chunk"'
Attempt = Callable[[Callable[[Endpoint], T]], T]


class TorchServeTransport:
    """Inference on TorchServe. It publishes no tensor metadata: a local deployment's archives say the
    declared datatypes, so values are cast and checked here as for Triton; elsewhere the server converts them."""

    def __init__(self, connections: Connections, timeout_s: float, binary: bool, cache_dir: Path) -> None:
        self.connections, self.timeout_s, self.binary, self.cache_dir = connections, timeout_s, binary, cache_dir
        # Per local model version, from its archive: each input's (datatype, rank), and whether it streams.
        self._declared: dict[tuple[str, str, int | None], tuple[dict[str, tuple[str, int]] | None, bool]] = {}

    def metadata(self, endpoint: Endpoint, model: str, version: int | None, attempt: Attempt) -> dict:
        raise MfnError(f"{model} at {endpoint}: TorchServe publishes no tensor metadata; see the handler's declaration")

    def infer(  # noqa: PLR0913
        self, endpoint: Endpoint, model: str, inputs: Mapping[str, Any], version: int | None, outputs: list[str] | None,
        attempt: Attempt,
    ) -> dict[str, np.ndarray]:
        from mfn.client import torchserve_wire

        declared, streaming = self._declaration(endpoint, model, version)
        if streaming:
            # Refused before sending: TorchServe 0.12 answers a plain gRPC call with the first chunk and its worker
            # then stalls on the rest for its response timeout.
            raise InvokeError(_STREAMING_HINT.format(model=model, endpoint=endpoint))
        body = self._body(model, inputs, declared)
        limit = endpoint.max_request_bytes
        if limit is not None and len(body.data) > limit:
            raise InvokeError(
                f"{model} at {endpoint}: a request of {len(body.data):,} bytes exceeds the deployment's limit of "
                f"{limit:,} (TorchServe's max_request_size): send fewer rows per request, or redeploy with a larger "
                "`mfn deploy --max-request-mb`"
            )

        def send(current: Endpoint) -> tuple[bytes, int | None]:
            if current.protocol == "grpc":
                return self._grpc_channel(current).infer(model, body, version, current.token(), self.timeout_s), None
            answer: tuple[bytes, int | None] = self._rest_connections(current).infer(model, body, version, current.token())
            return answer

        reply, header_length = attempt(send)
        if reply.startswith(CHUNK_START):
            raise InvokeError(_STREAMING_HINT.format(model=model, endpoint=endpoint))
        try:
            return torchserve_wire.parse_response(reply, header_length, outputs, self.binary)
        except InvokeError as error:
            raise InvokeError(f"{model} at {endpoint}: {error}") from None

    def stream(
        self, endpoint: Endpoint, model: str, inputs: Mapping[str, Any], version: int | None, attempt: Attempt
    ) -> Iterator[dict[str, np.ndarray]]:
        """A streaming model's chunks over REST (one JSON line each) or gRPC StreamPredictions."""
        from mfn.client import streams

        body = self._body(model, inputs, self._declaration(endpoint, model, version)[0])
        channel = self._grpc_channel(endpoint) if endpoint.protocol == "grpc" else None
        return streams.torchserve(endpoint, channel, model, body, version, self.timeout_s)

    def _body(self, model: str, inputs: Mapping[str, Any], declared: dict[str, tuple[str, int]] | None) -> Any:
        """The request body for `inputs`, cast to the declared datatypes where they are known."""
        from mfn.client import torchserve_wire

        arrays = arrays_for(model, inputs, declared)
        try:
            return torchserve_wire.request_body(arrays, self.binary)
        except InvokeError as error:
            raise InvokeError(f"{model}: {error}") from None

    def reset(self, endpoint: Endpoint) -> None:
        """Nothing to do: the REST pool drops broken connections and gRPC channels reconnect by themselves."""

    def _rest_connections(self, endpoint: Endpoint) -> Any:
        from mfn.client import torchserve_wire

        return self.connections.get(str(endpoint), lambda: torchserve_wire.RestConnections(endpoint.address, self.timeout_s))

    def _grpc_channel(self, endpoint: Endpoint) -> Any:
        from mfn.client import torchserve_wire

        return self.connections.get(str(endpoint), lambda: torchserve_wire.GrpcChannel(endpoint.address, self.cache_dir))

    def _declaration(
        self, endpoint: Endpoint, model: str, version: int | None
    ) -> tuple[dict[str, tuple[str, int]] | None, bool]:
        if endpoint.source is None or endpoint.deployment is None:
            return None, False
        key = (endpoint.deployment, model, version)
        if key not in self._declared:
            spec = endpoint.source.packaged_spec(endpoint.deployment, model, version)
            self._declared[key] = ((None, False) if spec is None else
                                   ({tensor.name: (tensor.dtype, len(tensor.shape) + 1) for tensor in spec.inputs}, spec.streaming))
        return self._declared[key]


_STREAMING_HINT = ("{model} at {endpoint} is a streaming model function: read its chunks with Client.stream('{model}', "
                   "...) or `mfn invoke {model} --stream`")
