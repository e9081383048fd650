"""Versions in mfn.Client: the default version it sends to a local Triton deployment, and what it says when a server
refuses a version. Both ask the resolver that found the deployment (mfn.client.endpoints.Resolver), which knows
what mfn's version rule serves there."""

from __future__ import annotations

import re

from mfn.client.endpoints import Endpoint
from mfn.kinds import Server, what_exists

# Triton: "... version 9 is not found" (never packaged), "... version 1 is not at ready state" (not loaded);
# TorchServe: "Model version: 1 does not exist for model: x".
VERSION_REFUSED = re.compile(r"version:? (\d+) (?:is not found|is not at ready state|does not exist)", re.IGNORECASE)


def default_version(endpoint: Endpoint, model: str) -> int | None:
    """The version to send where the caller names none, or None where the server's own answer is the default.

    Triton answers such requests with the newest version it serves and has no switch for another, so where
    `mfn set-default` chose an older one for a local deployment, the client names it.
    """
    if endpoint.source is None or endpoint.deployment is None or endpoint.server != Server.TRITON:
        return None
    served = endpoint.source.versions(endpoint.deployment).get(model) or {}
    versions, default = served.get("versions") or [], served.get("default_version")
    return default if versions and default != max(versions) else None


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
    served, packaged = known
    exists = what_exists(model, served, packaged)
    if version in packaged:
        return (f"; {model} v{version} is packaged but not loaded in {endpoint.deployment} ({exists}): "
                f"`mfn load {model} --version {version}` loads it")
    return (f"; {model} has no v{version} in {endpoint.deployment} ({exists}): package it into {endpoint.repository} "
            f"(`mfn package ... --version {version}`), then `mfn load {model} --version {version}`")


def _known_versions(endpoint: Endpoint, model: str) -> tuple[list[int], list[int]] | None:
    """(served, packaged) versions of `model` in a local deployment, or None where mfn cannot know them."""
    if endpoint.source is None or endpoint.deployment is None:
        return None
    packaged = endpoint.source.packaged_versions(endpoint.deployment, model)
    if packaged is None:
        return None
    return endpoint.source.versions(endpoint.deployment).get(model, {}).get("versions", []), packaged
