"""mfn.Client: call model functions over KServe v2 HTTP or gRPC (Triton) or TorchServe's REST and gRPC APIs,
with numpy arrays in and out.

In parts: `endpoints` finds where a model is served (local deployments through an injected resolver),
`triton` and `torchserve` speak each server's API, `retry` is the one retry policy, `connections` holds
the open connections.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import numpy as np

from mfn.client.connections import Connections
from mfn.client.endpoints import Endpoint, Endpoints, Resolver
from mfn.client.retry import RetryPolicy
from mfn.client.torchserve import TorchServeTransport
from mfn.client.triton import TritonTransport
from mfn.client.versions import VERSION_REFUSED, version_hint
from mfn.errors import CallError, NoAnswer
from mfn.kinds import PROTOCOLS, SERVERS, Server

# The public names; the parts' own helpers (retry, values, transports) are imported from their modules.
__all__ = ["PROTOCOLS", "SERVERS", "Client", "Endpoint"]
T = TypeVar("T")


class Client:
    """Invoke model functions served by a local deployment or at a URL.

    One client may be shared by threads: calls on it run concurrently (Triton over HTTP gets a connection
    per thread, as tritonclient's HTTP client must stay on one thread; the other connections are shared).

    Args:
        target: A URL (`http://host:port`, `grpc://host:port`, or `host:port` for `protocol`), the name of a
            local deployment, or None to find the local deployment serving each model.
        protocol: "http" or "grpc".
        server: API spoken at a URL target: "triton" (KServe v2) or "torchserve"; local deployments say their own.
        timeout_s: Limit for each call, connection included.
        retries: Extra attempts after a failed connection, a timeout or while the model's worker restarts (see
            `retryable`), 0.5 s apart and doubling; refusals and handler errors are not retried. The default,
            4 (7.5 s of waiting in all), outlasts a supervised local server's restart. A URL that refuses the
            connection before it ever answered this client is not retried: nothing listens there.
        binary: Send tensors as raw bytes (the KServe v2 binary tensor data extension) and ask for binary
            outputs, on both servers; False sends and receives KServe v2 JSON.
        token: The inference key for a URL target (sent as `authorization: Bearer <token>`); local deployments
            need none, mfn reads their keys.
        resolver: Where local deployments are looked up (see mfn.client.endpoints.Resolver); default: the
            records in $MFN_HOME that `mfn deploy` writes.
    """

    def __init__(  # noqa: PLR0913
        self,
        target: str | None = None,
        *,
        protocol: str = "http",
        server: str = "triton",
        timeout_s: float = 30.0,
        retries: int = 4,
        binary: bool = True,
        token: str | None = None,
        resolver: Resolver | None = None,
    ) -> None:
        from mfn.home import mfn_home

        self._endpoints = Endpoints(target, protocol, server, token, resolver)
        self.target, self.protocol, self.server = target, protocol, server
        self.timeout_s, self.retries, self.binary = timeout_s, retries, binary
        self._retry = RetryPolicy(retries)
        self._connections = Connections()
        self._answered: set[str] = set()  # endpoints that have answered this client at least once
        self._triton = TritonTransport(self._connections, timeout_s, binary)
        self._transports: dict[str, TritonTransport | TorchServeTransport] = {
            "triton": self._triton,
            "torchserve": TorchServeTransport(self._connections, timeout_s, binary, mfn_home() / "cache"),
        }

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every connection; open HTTP keep-alives would otherwise delay a server's shutdown."""
        self._connections.close()

    def endpoint(self, model: str) -> Endpoint:
        """The endpoint this client uses for `model`, looked up once (again after a failed connection)."""
        return self._endpoints.get(model)

    def metadata(self, model: str, version: int | None = None) -> dict:
        """The model's KServe v2 metadata: name, versions, inputs and outputs with datatypes and shapes (Triton)."""
        endpoint = self.endpoint(model)
        return self._transports[endpoint.server].metadata(endpoint, model, version, self._attempt(model, endpoint))

    def infer(
        self,
        model: str,
        inputs: Mapping[str, Any],
        version: int | None = None,
        outputs: list[str] | None = None,
    ) -> dict[str, np.ndarray]:
        """Run one request and return its outputs by name.

        Inputs may be arrays or nested lists; they are cast to the model's declared dtypes, and a single
        row given without its batch dimension gets one. Values the model cannot take (text for numbers,
        numbers for text, ragged rows, integers out of range) are refused before anything is sent.

        Raises:
            InvokeError: naming the input and what to send, or with the server's reason when the request fails.
        """
        endpoint = self.endpoint(model)
        return self._transports[endpoint.server].infer(endpoint, model, inputs, version, outputs, self._attempt(model, endpoint))

    def stream(self, model: str, inputs: Mapping[str, Any], version: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        """Run one request on a streaming model function and yield its chunks (output dicts) as they arrive.

        Triton streams over gRPC (ModelStreamInfer) and HTTP (its generate_stream extension, one row per request);
        TorchServe over REST and gRPC (StreamPredictions). Stopping early (closing the iterator, or leaving a `for`
        loop) cancels the request: Triton tells the model between chunks; TorchServe 0.12 cannot. Streams are
        not retried.

        Raises:
            InvokeError: naming the input and what to send, or with the server's reason.
        """
        endpoint = self.endpoint(model)
        return self._transports[endpoint.server].stream(endpoint, model, inputs, version, self._attempt(model, endpoint))

    def _attempt(self, model: str, endpoint: Endpoint) -> Callable[[Callable[[Endpoint], T]], T]:
        """Run a call with the model's current endpoint under the retry policy: a refused key is read again once;
        after a failed connection a local deployment is looked up again, as a redeploy may have moved it."""

        def attempt(call: Callable[[Endpoint], T]) -> T:
            def known() -> Endpoint:
                return self._endpoints.peek(model, endpoint)

            def refresh_key() -> bool:
                credentials = known().credentials
                if credentials is None:
                    return False
                credentials.refresh()
                return True

            def after_failure(error: CallError) -> None:
                now = known()
                self._transports[now.server].reset(now)
                if now.local and error.status == NoAnswer.CONNECTION:
                    self._endpoints.forget(model)

            def describe(error: CallError, attempts: int) -> str:
                if error.status == NoAnswer.UNREACHABLE:
                    return f"{model}: {error}"
                after = f" (after {attempts} attempts)" if attempts > 1 else ""
                return f"{model} at {known()}: {error}{after}{self._hint(model, error, known())}"

            return self._retry.run(lambda: self._once(call, self._endpoints.get(model)), refresh_key, after_failure,
                                   describe)

        return attempt

    def _once(self, call: Callable[[Endpoint], T], endpoint: Endpoint) -> T:
        """One attempt. A URL that refuses the connection before it ever answered this client fails at once (no
        retries: nothing listens there); a local deployment, or a URL that has answered, may be restarting."""
        try:
            result = call(endpoint)
        except CallError as error:
            if error.status not in _NO_ANSWER:
                self._answered.add(str(endpoint))
            elif not endpoint.local and str(endpoint) not in self._answered and _REFUSED.search(str(error)):
                raise CallError(f"nothing listens at {endpoint} (connection refused): check the URL's host and port, and "
                                "that the server runs there", NoAnswer.UNREACHABLE) from None
            raise
        self._answered.add(str(endpoint))
        return result

    def _hint(self, model: str, error: CallError, endpoint: Endpoint) -> str:
        """What to do about a failure whose cause the server's own words do not make clear."""
        message = str(error)
        hint = _hint(model, message, endpoint)
        if hint:
            return hint
        if _UNKNOWN_MODEL.search(message):
            return f"; {self._served_models(model, endpoint)}"
        if (endpoint.server == Server.TORCHSERVE and not endpoint.local and error.status in ("404", "UNIMPLEMENTED")
                and self._triton.speaks_triton(endpoint)):
            return ("; the server there answers like Triton (KServe v2), not TorchServe: pass --server triton "
                    "(mfn.Client(url, server='triton'))")
        return ""

    def _served_models(self, model: str, endpoint: Endpoint) -> str:
        """The models the endpoint serves and the closest to `model`: a local deployment's from its record, Triton's
        at a URL from its repository index; TorchServe lists them only on its management API."""
        from mfn.kinds import served_names_hint

        served: list[str] | None = None
        if endpoint.source is not None and endpoint.deployment is not None:
            served = endpoint.source.served_models(endpoint.deployment)
        elif endpoint.server == Server.TRITON:
            served = self._triton.served_models(endpoint)
        if served is not None:
            return f"no model {model!r} there ({served_names_hint(model, served)})"
        if endpoint.server == Server.TORCHSERVE:
            return f"no model {model!r} there; TorchServe lists its models on its management API (GET /models)"
        return (f"no model {model!r} there; Triton lists its models at POST /v2/repository/index (with its management "
                "key where one is set)")


# Statuses that may mean no server answered at all.
_NO_ANSWER = (NoAnswer.CONNECTION, NoAnswer.TIMEOUT, "UNAVAILABLE", "DEADLINE_EXCEEDED")
# A socket's ECONNREFUSED, as Python and gRPC say it.
_REFUSED = re.compile(r"connection refused", re.IGNORECASE)
# Triton: "Request for unknown model: 'x' is not found"; TorchServe: "Model not found: x" (REST 404, gRPC INTERNAL).
_UNKNOWN_MODEL = re.compile(r"Request for unknown model: '[^']*' is not found$|Model not found: ")
# Triton refusing a plain request to a decoupled (streaming) model, over HTTP and over gRPC.
_DECOUPLED = re.compile(r"doesn't support models with decoupled transaction policy")
# What tritonclient makes of an answer that is not Triton's (TorchServe's REST error body, its gRPC services).
_NOT_TRITON = re.compile(r"while decoding the response|Method not found: inference\.GRPCInferenceService")
# TorchServe: "Token Authorization failed"; Triton: "This API (gRPC: protocol) is restricted, expecting header ...".
_KEY_REFUSED = re.compile(r"Token Authorization failed|(API|protocol) is restricted", re.IGNORECASE)


def _hint(model: str, message: str, endpoint: Endpoint) -> str:
    """What to do about a failure whose cause the server's own words do not make clear."""
    if _DECOUPLED.search(message):
        return (f"; {model} is a streaming model function: read its chunks with Client.stream({model!r}, ...) or "
                f"`mfn invoke {model} --stream` (Triton streams over gRPC, and over HTTP through generate_stream)")
    if VERSION_REFUSED.search(message):
        return version_hint(model, message, endpoint)
    if _NOT_TRITON.search(message) and endpoint.server == Server.TRITON:
        return ("; the server there does not speak Triton's KServe v2 API: for TorchServe pass --server torchserve "
                "(mfn.Client(url, server='torchserve'))")
    if _KEY_REFUSED.search(message) and not endpoint.local:
        return ("; the server wants its inference key: pass --token KEY or set $MFN_TOKEN (mfn.Client(url, token=KEY)); "
                "TorchServe writes its keys to key_file.json in its working directory")
    return ""
