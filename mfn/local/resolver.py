"""How mfn.Client finds local deployments: the one place the client reads mfn's deployment records, behind the
small interface it is given (mfn.client.endpoints.Resolver).

A local deployment's address (its proxy's, idle front's or server's), server, body limit, package and the key its
callers present; the models and versions it serves, for the client's default version and its hints.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mfn.errors import MfnError
from mfn.local import state

if TYPE_CHECKING:
    from mfn.spec import ModelSpec


@dataclass(frozen=True)
class Located:
    """Where a local deployment takes one protocol's requests, and what the client needs to call it."""

    address: str
    server: str
    read_key: Callable[[], str | None]  # read again when the server refuses it (TorchServe's change on restart)
    max_request_bytes: int | None
    repository: str
    deployment: str


class LocalDeployments:
    """The deployments recorded in this user's $MFN_HOME."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[int, dict[str, dict]]] = {}
        self._record_paths: dict[str, str] = {}  # built once: a path built per request cost more than the stat

    def locate(self, model: str, deployment: str | None, protocol: str) -> Located:
        """Deployment `deployment`, or the one running deployment that serves `model`.

        Raises:
            MfnError: no such deployment, or none or several serve the model (naming them and how to choose).
        """
        from mfn.proxy import routes

        record = state.get(deployment) if deployment else state.find_serving(
            model, choose='mfn.Client("{name}") (with `mfn invoke`: --deployment {name})',
            elsewhere='a URL: mfn.Client("http://host:port") (with `mfn invoke`: --url)')
        route = routes.with_proxy(record)  # behind the rollout proxy, callers present the proxy's own key
        read_key = ((lambda: routes.callers_key(route)) if route is not None
                    else (lambda: state.read_key(record, "inference")))
        return Located(f"{record.host}:{record.public_port(protocol)}", record.server, read_key,
                       record.max_request_bytes, record.repository, record.name)

    def served_models(self, deployment: str) -> list[str] | None:
        record = state.load(deployment)
        return record.models if record is not None else None

    def versions(self, deployment: str) -> dict[str, dict]:
        """model -> {"versions", "default_version"} as the deployment's supervisor last recorded them; the record is
        read again only when it changed (one stat per call otherwise, cheap enough for every request)."""
        path = self._record_paths.get(deployment)
        if path is None:
            path = self._record_paths[deployment] = str(state.state_file(deployment))
        try:
            changed = os.stat(path).st_mtime_ns
        except OSError:
            return {}
        seen = self._seen.get(deployment)
        if seen is None or seen[0] != changed:
            record = state.load(deployment)
            seen = self._seen[deployment] = (changed, record.versions if record is not None else {})
        return seen[1]

    def packaged_spec(self, deployment: str, model: str, version: int | None) -> ModelSpec | None:
        """The spec inside the deployment's archive of `model` (of `version`, else the first); None where there is
        none to read, or the store changed under the running deployment (the server then judges the values)."""
        from mfn.archiver.reading import SPEC_FILE, archive_info, archive_spec, read_member
        from mfn.store import discover

        record = state.load(deployment)
        if record is None:
            return None
        try:
            archives = discover(Path(record.repository)).models.get(model, [])
            chosen = [archive for archive in archives if version is None or archive_info(archive).version == version]
            if not chosen or read_member(chosen[0], SPEC_FILE) is None:
                return None
            return archive_spec(chosen[0])
        except (OSError, MfnError):
            return None

    def packaged_versions(self, deployment: str, model: str) -> list[int] | None:
        """The versions of `model` packaged in the deployment's repository or store; None for no such deployment."""
        from mfn.store import discover

        record = state.load(deployment)
        if record is None:
            return None
        try:
            return discover(Path(record.repository)).packaged_versions(model)
        except (OSError, MfnError):
            return []
