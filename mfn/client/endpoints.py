"""Where mfn.Client sends a model's requests: a URL, a named local deployment, or whichever serves the model.

The only part of the client that reads mfn's deployment records (mfn.local.state): a local deployment's
address, server, body limit and the key file its credentials come from.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from mfn.errors import MfnError
from mfn.kinds import PROTOCOLS, SERVERS



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

    `max_request_bytes` is the server's body limit where mfn knows it (a local deployment); `local` says the
    endpoint was looked up in the local deployment records (and may move on a redeploy); `repository` is the
    local deployment's model store, where a TorchServe model's declaration can be read; `deployment` its name.
    """

    protocol: str
    address: str
    server: str = "triton"
    credentials: Credentials | None = field(default=None, compare=False, repr=False)
    max_request_bytes: int | None = None
    local: bool = False
    repository: str | None = None
    deployment: str | None = None

    def __str__(self) -> str:
        return f"{self.protocol}://{self.address}"

    def token(self) -> str | None:
        return self.credentials.token() if self.credentials else None


class Endpoints:
    """Each model's endpoint, looked up once and again only after `forget` (a failed connection to a local one)."""

    def __init__(self, target: str | None, protocol: str, server: str, token: str | None) -> None:
        if protocol not in PROTOCOLS:
            raise MfnError(f"unknown protocol {protocol!r}: use http or grpc")
        if server not in SERVERS:
            raise MfnError(f"unknown server {server!r}: use triton or torchserve")
        self.target, self.protocol, self.server = target, protocol, server
        self._given = Credentials(lambda: token) if token else None
        self._found: dict[str, Endpoint] = {}
        self._lock = threading.Lock()

    def get(self, model: str) -> Endpoint:
        endpoint = self._found.get(model)
        if endpoint is None:
            endpoint = resolve(model, self.target, self.protocol, self.server, self._given)
            with self._lock:
                self._found[model] = endpoint
        return endpoint

    def peek(self, model: str, default: Endpoint) -> Endpoint:
        """The endpoint known for `model` now, without looking it up."""
        return self._found.get(model, default)

    def forget(self, model: str) -> None:
        with self._lock:
            self._found.pop(model, None)


def resolve(model: str, target: str | None, protocol: str, server: str, given: Credentials | None) -> Endpoint:
    """The endpoint for `model`: from a URL (`http://`, `grpc://` or `host:port`), a deployment name, or the
    local deployment that serves the model.

    Raises:
        MfnError: an unknown URL scheme, or no such deployment.
    """
    if target and "://" in target:
        scheme, _, address = target.partition("://")
        if scheme not in PROTOCOLS:
            raise MfnError(f"URL scheme {scheme!r} in {target!r}: use http:// or grpc://")
        return Endpoint(scheme, address.rstrip("/"), server, given)
    if target and ":" in target:
        return Endpoint(protocol, target, server, given)
    from mfn.local import state

    from mfn.proxy import routes

    deployment = state.get(target) if target else state.find_serving(
        model, choose='mfn.Client("{name}") (with `mfn invoke`: --deployment {name})',
        elsewhere='a URL: mfn.Client("http://host:port") (with `mfn invoke`: --url)')
    route = routes.with_proxy(deployment)  # behind the rollout proxy, callers present the proxy's own key
    credentials = Credentials((lambda: routes.callers_key(route)) if route is not None
                              else (lambda: state.read_key(deployment, "inference")))
    return Endpoint(protocol, f"{deployment.host}:{deployment.public_port(protocol)}", deployment.server, credentials,
                    deployment.max_request_bytes, local=True, repository=deployment.repository,
                    deployment=deployment.name)
