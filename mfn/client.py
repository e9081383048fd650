"""mfn.Client: call model functions over KServe v2 HTTP or gRPC with numpy arrays in and out."""

from __future__ import annotations

import http.client
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from mfn.errors import CallError, InvokeError, MfnError
from mfn.runtime.codec.client import to_arrays
from mfn.runtime.loop import RequestFailure

PROTOCOLS = ("http", "grpc")
SERVERS = ("triton", "torchserve")
RETRY_BACKOFF_S = 0.5  # doubled after each attempt
# Answers that mean the model's worker was (re)starting, as (statuses, the server's own words at the start of
# its message): TorchServe 0.12 answers 503 (gRPC INTERNAL) "Model ... has no worker to serve inference
# request" while no worker is up, and "Worker died." to the requests a dying worker held: 500 (gRPC INTERNAL;
# 507 in older releases), or 413 (gRPC RESOURCE_EXHAUSTED) when the worker was killed (exit 137, which
# TorchServe takes for running out of memory). Triton answers 500 (gRPC INTERNAL) "Stub process '<instance>'
# is not healthy." before it sends a request to a Python stub that died; mfn's supervisor swaps in a new one.
# Matching at the start keeps a handler's own message ("predict failed: ... is not healthy") from counting.
RESTARTING = (
    (("503", "INTERNAL"), re.compile(r"Model \S+ has no worker to serve inference request")),
    (("500", "507", "413", "INTERNAL", "RESOURCE_EXHAUSTED"), re.compile(r"Worker died\.")),
    (("500", "INTERNAL"), re.compile(r"Stub process '[^']*' is not healthy\.")),
)
# How each server refuses a missing or stale key: TorchServe 401 / UNAUTHENTICATED, Triton 403 / UNAVAILABLE.
AUTH_REFUSED = ("401", "403", "UNAUTHENTICATED", "PERMISSION_DENIED")
# "HTTP 503: " or "gRPC INTERNAL: ": how CallError messages begin.
_STATUS_PREFIX = re.compile(r"^(?:HTTP|gRPC) \S+: ")
T = TypeVar("T")


def auth_refused(error: CallError) -> bool:
    """Whether the server refused the call's key (missing or stale): TorchServe 401 / UNAUTHENTICATED, Triton
    403 over HTTP and UNAVAILABLE "This protocol is restricted" over gRPC."""
    return error.status in AUTH_REFUSED or (error.status == "UNAVAILABLE" and "is restricted, expecting header" in str(error))


def retryable(error: CallError) -> bool:
    """mfn.Client's retry policy: repeat a call only when it cannot have been the request's own fault.

    That is a connection that failed or broke, a worker that was restarting, or no answer in time:
    TorchServe loses a request its worker held when the worker dies, and holds new ones until a new
    worker is up, so a timeout is how a restart often shows. A model slower than the timeout is
    therefore tried `retries` + 1 times. Refusals (4xx) and handler errors are never repeated.
    """
    if error.status in ("connection", "timeout", "DEADLINE_EXCEEDED"):
        return True
    if error.status == "UNAVAILABLE":
        # gRPC's code for a failed connection; TorchServe also answers a handler's exception with it, and
        # Triton a request without the key a restricted protocol wants.
        return "Prediction failed" not in str(error) and not auth_refused(error)
    server_words = _STATUS_PREFIX.sub("", str(error), count=1)
    return any(error.status in statuses and phrase.match(server_words) for statuses, phrase in RESTARTING)


class Credentials:
    """A server's API token, read once and again only when the server refuses it (it changes on a restart)."""

    def __init__(self, read: Callable[[], str | None]) -> None:
        self._read = read
        self._token: str | None = None
        self._known = False

    def token(self) -> str | None:
        if not self._known:
            self._token, self._known = self._read(), True
        return self._token

    def refresh(self) -> str | None:
        self._known = False
        return self.token()


@dataclass(frozen=True)
class Endpoint:
    """Where to reach a server for one protocol, which server API it speaks, and what it accepts.

    `max_request_bytes` is the server's body limit where mfn knows it (a local TorchServe deployment);
    `local` says the endpoint was looked up in the local deployment records (and may move on a redeploy).
    """

    protocol: str
    address: str
    server: str = "triton"
    credentials: Credentials | None = field(default=None, compare=False, repr=False)
    max_request_bytes: int | None = None
    local: bool = False
    repository: str | None = None

    def __str__(self) -> str:
        return f"{self.protocol}://{self.address}"

    def token(self) -> str | None:
        return self.credentials.token() if self.credentials else None


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
            4 (7.5 s of waiting in all), outlasts a supervised local server's restart.
        binary: Send tensors as raw bytes (the KServe v2 binary tensor data extension) and ask for binary
            outputs, on both servers; False sends and receives KServe v2 JSON.
        token: The inference key for a URL target (sent as `authorization: Bearer <token>`); local deployments
            need none, mfn reads their keys.
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        protocol: str = "http",
        server: str = "triton",
        timeout_s: float = 30.0,
        retries: int = 4,
        binary: bool = True,
        token: str | None = None,
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
        self.binary = binary
        self._given_token = Credentials(lambda: token) if token else None
        self._clients: dict[str, Any] = {}
        self._per_thread = threading.local()
        self._thread_clients: list[tuple[threading.Thread, Any]] = []
        self._lock = threading.Lock()
        self._endpoints: dict[str, Endpoint] = {}
        self._metadata: dict[tuple[str, str, str], dict] = {}
        self._declared: dict[tuple[str, str, int | None], Any] = {}

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every connection; open HTTP keep-alives would otherwise delay a server's shutdown."""
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
            clients += [client for _, client in self._thread_clients]
            self._thread_clients = []
        self._per_thread = threading.local()
        for client in clients:
            client.close()

    def endpoint(self, model: str) -> Endpoint:
        """The endpoint this client uses for `model`, looked up once (again after a failed connection)."""
        endpoint = self._endpoints.get(model)
        if endpoint is None:
            endpoint = self._endpoints[model] = self._find_endpoint(model)
        return endpoint

    def _find_endpoint(self, model: str) -> Endpoint:
        target = self.target
        if target and "://" in target:
            scheme, _, address = target.partition("://")
            if scheme not in PROTOCOLS:
                raise MfnError(f"URL scheme {scheme!r} in {target!r}: use http:// or grpc://")
            return Endpoint(scheme, address.rstrip("/"), self.server, self._given_token)
        if target and ":" in target:
            return Endpoint(self.protocol, target, self.server, self._given_token)
        from mfn.deploy import state

        deployment = state.get(target) if target else state.find_serving(model)
        address = f"{deployment.host}:{deployment.ports[self.protocol]}"
        if deployment.server == "torchserve":
            limit = deployment.extra.get("max_request_bytes")
            return Endpoint(self.protocol, address, "torchserve", Credentials(lambda: state.read_key(deployment, "inference")),
                            int(limit) if limit else None, local=True, repository=deployment.repository)
        return Endpoint(self.protocol, address, credentials=Credentials(lambda: state.read_key(deployment, "inference")),
                        local=True)

    def metadata(self, model: str, version: int | None = None) -> dict:
        """The model's KServe v2 metadata: name, versions, inputs and outputs with datatypes and shapes (Triton)."""
        endpoint = self.endpoint(model)
        if endpoint.server != "triton":
            raise MfnError(f"{model} at {endpoint}: TorchServe publishes no tensor metadata; see the handler's declaration")
        key = (str(endpoint), model, str(version or ""))
        if key not in self._metadata:
            self._metadata[key] = self._triton_call(
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
        row given without its batch dimension gets one. Values the model cannot take (text for numbers,
        numbers for text, ragged rows, integers out of range) are refused before anything is sent.

        Raises:
            InvokeError: naming the input and what to send, or with the server's reason when the request fails.
        """
        endpoint = self.endpoint(model)
        if endpoint.server == "torchserve":
            declared = self._torchserve_declared(endpoint, model, version)
            return self._infer_torchserve(endpoint, model, _arrays(model, inputs, declared), version, outputs)
        metadata = self.metadata(model, version)
        declared = {tensor["name"]: (tensor["datatype"], len(tensor["shape"])) for tensor in metadata["inputs"]}
        arrays = _arrays(model, inputs, declared)
        module = _protocol_module(endpoint.protocol)
        binary = self.binary or endpoint.protocol == "grpc"  # gRPC carries tensors as bytes in any case
        infer_inputs = []
        for name, array in arrays.items():
            infer_input = module.InferInput(name, list(array.shape), declared[name][0])
            if endpoint.protocol == "http":
                infer_input.set_data_from_numpy(array, binary_data=binary)
            else:
                infer_input.set_data_from_numpy(array)
            infer_inputs.append(infer_input)
        wanted = outputs or [tensor["name"] for tensor in metadata["outputs"]]
        if endpoint.protocol == "http":
            requested = [module.InferRequestedOutput(name, binary_data=binary) for name in wanted]
        else:
            requested = [module.InferRequestedOutput(name) for name in wanted]

        def call(client: Any) -> Any:
            return client.infer(model, infer_inputs, model_version=str(version or ""), outputs=requested, **self._infer_kwargs(endpoint))

        result = self._triton_call(endpoint, model, call)
        answers = {name: result.as_numpy(name) for name in wanted}
        if not binary:
            # tritonclient gives JSON BYTES outputs back as text: mfn gives BYTES as bytes whatever the wire.
            answers = {name: _text_to_bytes(array) for name, array in answers.items()}
        return answers

    def _infer_torchserve(
        self, endpoint: Endpoint, model: str, arrays: dict[str, np.ndarray], version: int | None, outputs: list[str] | None
    ) -> dict[str, np.ndarray]:
        from mfn import torchserve_client

        try:
            body = torchserve_client.request_body(arrays, self.binary)
        except InvokeError as error:
            raise InvokeError(f"{model}: {error}") from None
        limit = endpoint.max_request_bytes
        if limit is not None and len(body.data) > limit:
            raise InvokeError(
                f"{model} at {endpoint}: a request of {len(body.data):,} bytes exceeds the deployment's limit of "
                f"{limit:,} (TorchServe's max_request_size): send fewer rows per request, or redeploy with a larger "
                "`mfn deploy --max-request-mb`"
            )

        def call() -> tuple[bytes, int | None]:
            current = self.endpoint(model)
            if current.protocol == "grpc":
                return self._grpc_channel(current).infer(model, body, version, current.token(), self.timeout_s), None
            return self._rest_connections(current).infer(model, body, version, current.token())

        reply, header_length = self._with_retries(endpoint, model, call)
        try:
            return torchserve_client.parse_response(reply, header_length, outputs, self.binary)
        except InvokeError as error:
            raise InvokeError(f"{model} at {endpoint}: {error}") from None

    def _torchserve_declared(self, endpoint: Endpoint, model: str, version: int | None) -> dict[str, tuple[str, int]] | None:
        """Declared input datatypes and ranks from the archive a local TorchServe serves (it publishes none itself).

        With them, values are cast and checked here as for Triton; without (a URL, an archive mfn did not
        build), datatypes are the values' own and the server converts them.
        """
        if endpoint.repository is None:
            return None
        key = (endpoint.repository, model, version)
        if key not in self._declared:
            self._declared[key] = _archive_declaration(endpoint.repository, model, version)
        return self._declared[key]

    def _rest_connections(self, endpoint: Endpoint) -> Any:
        from mfn import torchserve_client

        return self._connection(endpoint, lambda: torchserve_client.RestConnections(endpoint.address, self.timeout_s))

    def _grpc_channel(self, endpoint: Endpoint) -> Any:
        from mfn import torchserve_client
        from mfn.deploy.state import mfn_home

        return self._connection(endpoint, lambda: torchserve_client.GrpcChannel(endpoint.address, mfn_home() / "cache"))

    def _connection(self, endpoint: Endpoint, make: Callable[[], Any]) -> Any:
        if _per_thread(endpoint):
            return self._thread_connection(endpoint, make)
        key = str(endpoint)
        connection = self._clients.get(key)
        if connection is None:
            with self._lock:
                connection = self._clients.get(key)
                if connection is None:
                    connection = self._clients[key] = make()
        return connection

    def _thread_connection(self, endpoint: Endpoint, make: Callable[[], Any]) -> Any:
        mine = getattr(self._per_thread, "clients", None)
        if mine is None:
            mine = self._per_thread.clients = {}
        key = str(endpoint)
        if key not in mine:
            mine[key] = make()
            with self._lock:
                # Connections of threads that have ended are closed here, so thread churn does not pile them up.
                alive = [(thread, client) for thread, client in self._thread_clients if thread.is_alive()]
                for thread, client in self._thread_clients:
                    if not thread.is_alive():
                        client.close()
                self._thread_clients = [*alive, (threading.current_thread(), mine[key])]
        return mine[key]

    def _drop_connection(self, endpoint: Endpoint) -> None:
        """Close this thread's connection to a per-thread endpoint after a failure; the next call opens a new one."""
        mine = getattr(self._per_thread, "clients", {})
        client = mine.pop(str(endpoint), None)
        if client is not None:
            with self._lock:
                self._thread_clients = [(thread, each) for thread, each in self._thread_clients if each is not client]
            client.close()

    def _triton_call(self, endpoint: Endpoint, model: str, call: Callable[[Any], T]) -> T:
        return self._with_retries(endpoint, model, lambda: _triton_errors(lambda: call(self._client(self.endpoint(model)))))

    def _with_retries(self, endpoint: Endpoint, model: str, call: Callable[[], T]) -> T:
        """Run `call`, repeating it with backoff while `retryable` says its failure was not the request's.

        A refused token is read again once (a restarted TorchServe writes new keys); after a failed
        connection a local deployment is looked up again, as a redeploy may have moved it.
        """
        token_refreshed = False
        attempt = 0
        while True:
            try:
                return call()
            except CallError as error:
                current = self._endpoints.get(model, endpoint)
                if auth_refused(error) and current.credentials and not token_refreshed:
                    token_refreshed = True
                    current.credentials.refresh()
                    continue
                if attempt == self.retries or not retryable(error):
                    after = f" (after {attempt + 1} attempts)" if attempt else ""
                    raise InvokeError(f"{model} at {current}: {error}{after}") from None
                if _per_thread(current):  # gRPC channels and TorchServe's connection pool recover by themselves
                    self._drop_connection(current)
                if current.local and error.status == "connection":
                    self._endpoints.pop(model, None)
                time.sleep(RETRY_BACKOFF_S * 2**attempt)
                attempt += 1

    def _client(self, endpoint: Endpoint) -> Any:
        module = _protocol_module(endpoint.protocol)
        if endpoint.protocol == "http":
            return self._connection(endpoint, lambda: module.InferenceServerClient(
                endpoint.address, connection_timeout=self.timeout_s, network_timeout=self.timeout_s))
        return self._connection(endpoint, lambda: module.InferenceServerClient(endpoint.address))

    def _metadata_kwargs(self, endpoint: Endpoint) -> dict:
        kwargs = {"as_json": True, "client_timeout": self.timeout_s} if endpoint.protocol == "grpc" else {}
        return {**kwargs, **self._auth_headers(endpoint)}

    def _infer_kwargs(self, endpoint: Endpoint) -> dict:
        kwargs = {"client_timeout": self.timeout_s} if endpoint.protocol == "grpc" else {}
        return {**kwargs, **self._auth_headers(endpoint)}

    @staticmethod
    def _auth_headers(endpoint: Endpoint) -> dict:
        token = endpoint.token()
        if not token:
            return {}
        # Triton's gRPC endpoint reads a restricted protocol's header under its own prefix.
        header = "triton-grpc-protocol-authorization" if endpoint.protocol == "grpc" else "authorization"
        return {"headers": {header: f"Bearer {token}"}}


def coerce_inputs(inputs: Mapping[str, Any], metadata: dict) -> dict[str, np.ndarray]:
    """Cast inputs to the datatypes in a model's KServe v2 metadata, adding the batch dimension to a single row.

    Raises:
        InvokeError: naming the input and what to send instead.
    """
    declared = {tensor["name"]: (tensor["datatype"], len(tensor["shape"])) for tensor in metadata["inputs"]}
    return _arrays(metadata["name"], inputs, declared)


def _arrays(model: str, inputs: Mapping[str, Any], declared: dict[str, tuple[str, int]] | None) -> dict[str, np.ndarray]:
    try:
        return to_arrays(inputs, declared, model)
    except RequestFailure as failure:
        raise InvokeError(f"{model}: {failure.message}") from None


def _per_thread(endpoint: Endpoint) -> bool:
    """tritonclient.http's client runs on gevent and must stay on the thread that made it; the others are shared."""
    return endpoint.server == "triton" and endpoint.protocol == "http"


def _archive_declaration(repository: str, model: str, version: int | None) -> dict[str, tuple[str, int]] | None:
    from pathlib import Path

    from mfn.archiver.reading import SPEC_FILE, archive_info, archive_spec, read_member
    from mfn.deploy.store import discover

    try:
        archives = discover(Path(repository)).models.get(model, [])
        chosen = [archive for archive in archives if version is None or archive_info(archive).version == version]
        if not chosen or read_member(chosen[0], SPEC_FILE) is None:
            return None
        spec = archive_spec(chosen[0])
    except (OSError, MfnError):
        return None  # the store changed under a running deployment: let the server judge the values
    return {tensor.name: (tensor.dtype, len(tensor.shape) + 1) for tensor in spec.inputs}


def _text_to_bytes(array: np.ndarray) -> np.ndarray:
    if array.dtype != object or not any(isinstance(item, str) for item in array.flat):
        return array
    encoded = np.empty(array.shape, dtype=object)
    encoded.flat[:] = [item.encode("utf-8") if isinstance(item, str) else item for item in array.flat]
    return encoded


def _triton_errors(call: Callable[[], T]) -> T:
    """Run a tritonclient call, turning its failures into CallError for the retry policy."""
    from tritonclient.utils import InferenceServerException

    try:
        return call()
    except InferenceServerException as error:
        lines, status = (error.message() or "").strip().splitlines(), error.status()
        message = lines[0] if lines else "no reason given"
        if status is None:  # refused by tritonclient itself, before sending
            raise CallError(message, "client") from None
        status = status.removeprefix("StatusCode.")
        # Said the way TorchServe failures are: "HTTP 400: ..." or "gRPC UNAVAILABLE: ...".
        raise CallError(f"{'HTTP' if status.isdigit() else 'gRPC'} {status}: {message}", status) from None
    except TimeoutError:
        raise CallError("no answer in time", "timeout") from None
    except (OSError, http.client.HTTPException) as error:
        # tritonclient.http lets socket errors through (connection refused, reset, unreachable), and its
        # geventhttpclient says "connection closed." with an HTTPException when a server died mid-answer.
        raise CallError(f"no connection: {error}", "connection") from None


def _protocol_module(protocol: str) -> Any:
    if protocol == "http":
        import tritonclient.http as module
    else:
        import tritonclient.grpc as module
    return module
