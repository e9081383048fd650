"""Versions in mfn.Client: the default version it sends to a local Triton deployment, and what it says when a server
refuses a version. Both read the deployment's record, where its supervisor keeps what mfn's version rule serves
(mfn.local.versions)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from mfn.client.endpoints import Endpoint
from mfn.errors import MfnError

# Triton: "... version 9 is not found" (never packaged), "... version 1 is not at ready state" (not loaded);
# TorchServe: "Model version: 1 does not exist for model: x".
VERSION_REFUSED = re.compile(r"version:? (\d+) (?:is not found|is not at ready state|does not exist)", re.IGNORECASE)


class DefaultVersions:
    """The version to send where the caller names none. Triton answers such requests with the newest version it
    serves and has no switch for another, so where `mfn set-default` chose an older one for a local deployment, the
    client names it. The record is read again whenever it changes (one stat per request otherwise)."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[int, dict[str, dict]]] = {}
        self._record_paths: dict[str, str] = {}  # built once: a path built per request cost more than the stat

    def for_request(self, endpoint: Endpoint, model: str) -> int | None:
        """The version to name, or None where the server's own answer is the default."""
        if endpoint.deployment is None or endpoint.server != "triton":
            return None
        served = self._versions(endpoint.deployment).get(model) or {}
        versions, default = served.get("versions") or [], served.get("default_version")
        return default if versions and default != max(versions) else None

    def _versions(self, name: str) -> dict[str, dict]:
        from mfn.local import state

        path = self._record_paths.get(name)
        if path is None:
            path = self._record_paths[name] = str(state.state_file(name))
        try:
            changed = os.stat(path).st_mtime_ns
        except OSError:
            return {}
        seen = self._seen.get(name)
        if seen is None or seen[0] != changed:
            record = state.load(name)
            seen = self._seen[name] = (changed, record.versions if record is not None else {})
        return seen[1]


def version_hint(model: str, message: str, endpoint: Endpoint) -> str:
    """What to do about a refused version: for a local deployment, the versions it serves and those packaged but not
    loaded, and the command that loads one; "" for other failures."""
    refused = VERSION_REFUSED.search(message)
    if refused is None:
        return ""
    version = int(refused.group(1))
    known = _known_versions(endpoint, model)
    if known is None:
        return (f"; {model} v{version} is not served there: `mfn describe {model}` lists a local deployment's versions, "
                f"`mfn load {model} --version N` adds one")
    from mfn.local.versions import what_exists

    served, packaged = known
    exists = what_exists(model, served, packaged)
    if version in packaged:
        return (f"; {model} v{version} is packaged but not loaded in {endpoint.deployment} ({exists}): "
                f"`mfn load {model} --version {version}` loads it")
    return (f"; {model} has no v{version} in {endpoint.deployment} ({exists}): package it into {endpoint.repository} "
            f"(`mfn package ... --version {version}`), then `mfn load {model} --version {version}`")


def _known_versions(endpoint: Endpoint, model: str) -> tuple[list[int], list[int]] | None:
    """(served, packaged) versions of `model` in a local deployment, or None where mfn cannot know them."""
    from mfn.local import state
    from mfn.store import discover

    record = state.load(endpoint.deployment) if endpoint.deployment else None
    if record is None or endpoint.repository is None:
        return None
    try:
        packaged = discover(Path(endpoint.repository)).packaged_versions(model)
    except (OSError, MfnError):
        packaged = []
    return record.versions.get(model, {}).get("versions", []), packaged
