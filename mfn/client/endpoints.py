"""Where mfn.Client sends a model's requests: a URL, a named local deployment, or whichever serves the model.

Local deployments are found through a `Resolver`, the one thing the client asks of wherever they are recorded:
mfn's own reads the records in $MFN_HOME (mfn.local.resolver), and a caller may give another.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from mfn.errors import MfnError
from mfn.kinds import PROTOCOLS, SERVERS

if TYPE_CHECKING:
    from mfn.local.resolver import Located
    from mfn.spec import ModelSpec


class Resolver(Protocol):
    """What the client asks of the local deployments' records."""

    def locate(self, model: str, deployment: str | None, protocol: str) -> Located:
        """Deployment `deployment`, or the one that serves `model` (raises MfnError naming the choices)."""

    def served_models(self, deployment: str) -> list[str] | None:
        """The deployment's models; None for no such deployment."""

    def versions(self, deployment: str) -> dict[str, dict]:
        """model -> {"versions", "default_version"} as the deployment serves them; called for every request."""

    def packaged_versions(self, deployment: str, model: str) -> list[int] | None:
        """The versions of `model` packaged for the deployment; None where that cannot be known."""

    def packaged_spec(self, deployment: str, model: str, version: int | None) -> ModelSpec | None:
        """The spec `model` was packaged with (TorchServe describes no model's inputs); None where it is not known."""


def local_deployments() -> Resolver:
    """mfn's own resolver, over the records in $MFN_HOME."""
    from mfn.local.resolver import LocalDeployments

    return LocalDeployments()



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
    local deployment's model store, where a TorchServe model's declaration can be read; `deployment` its name;
    `source` the resolver that found it, which knows its versions.
    """

    protocol: str
    address: str
    server: str = "triton"
    credentials: Credentials | None = field(default=None, compare=False, repr=False)
    max_request_bytes: int | None = None
    repository: str | None = None
    deployment: str | None = None
    source: Resolver | None = field(default=None, compare=False, repr=False)

    @property
    def local(self) -> bool:
        """Found among the local deployments (it may move on a redeploy) rather than given as a URL."""
        return self.source is not None

    def __str__(self) -> str:
        return f"{self.protocol}://{self.address}"

    def token(self) -> str | None:
        return self.credentials.token() if self.credentials else None


class Endpoints:
    """Each model's endpoint, looked up once and again only after `forget` (a failed connection to a local one)."""

    def __init__(self, target: str | None, protocol: str, server: str, token: str | None,
                 resolver: Resolver | None = None) -> None:
        if protocol not in PROTOCOLS:
            raise MfnError(f"unknown protocol {protocol!r}: use http or grpc")
        if server not in SERVERS:
            raise MfnError(f"unknown server {server!r}: use triton or torchserve")
        self.target, self.protocol, self.server = target, protocol, server
        self._given = Credentials(lambda: token) if token else None
        self._found: dict[str, Endpoint] = {}
        self._lock = threading.Lock()
        self._resolver = resolver  # mfn's own by default, made on first need: a URL needs none

    def get(self, model: str) -> Endpoint:
        endpoint = self._found.get(model)
        if endpoint is None:
            endpoint = self._from_url(self.target) if self.target and ":" in self.target else self._local(model)
            with self._lock:
                self._found[model] = endpoint
        return endpoint

    def peek(self, model: str, default: Endpoint) -> Endpoint:
        """The endpoint known for `model` now, without looking it up."""
        return self._found.get(model, default)

    def forget(self, model: str) -> None:
        with self._lock:
            self._found.pop(model, None)

    def _from_url(self, target: str) -> Endpoint:
        """A URL (`http://`, `grpc://`) or `host:port`.

        Raises:
            MfnError: an unknown URL scheme.
        """
        if "://" not in target:
            return Endpoint(self.protocol, target, self.server, self._given)
        scheme, _, address = target.partition("://")
        if scheme not in PROTOCOLS:
            raise MfnError(f"URL scheme {scheme!r} in {target!r}: use http:// or grpc://")
        return Endpoint(scheme, address.rstrip("/"), self.server, self._given)

    def _local(self, model: str) -> Endpoint:
        """The local deployment named by the target, or the one serving `model`."""
        if self._resolver is None:
            self._resolver = local_deployments()
        found = self._resolver.locate(model, self.target, self.protocol)
        return Endpoint(self.protocol, found.address, found.server, Credentials(found.read_key), found.max_request_bytes,
                        repository=found.repository, deployment=found.deployment, source=self._resolver)
