"""The one version rule of local deployments, on both servers: which versions of a model to serve, and which one
answers requests that name none.

Deploy, `mfn load`, `mfn unload --version`, `mfn reload`, `mfn set-default` and a server restart all compute what to
serve with `plan_versions`, from what the package says now (its versions and version policy) and what the operator
chose (`VersionChoices`); `serve` has the deployment's server make it so (`serve_versions` of
mfn.servers.triton.admin and mfn.servers.torchserve.admin) and notes it in the deployment's record, where mfn's clients
read the default (mfn.client.versions).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from mfn.errors import MfnError
from mfn.kinds import listing, what_exists
from mfn.local import state

if TYPE_CHECKING:
    from mfn.handlers.declarations import VersionPolicy
    from mfn.local.supervisor import Supervisor


@dataclass(frozen=True)
class VersionChoices:
    """What the operator chose for one model of a deployment beyond its package's version policy.

    `added` (`mfn load --version N`) and `removed` (`mfn unload --version N`) last until undeploy, also across
    server restarts and `mfn reload`; `default` (`mfn set-default`) is kept for later deployments of the same name.
    """

    added: frozenset[int] = frozenset()
    removed: frozenset[int] = frozenset()
    default: int | None = None

    def adding(self, version: int) -> VersionChoices:
        return replace(self, added=self.added | {version}, removed=self.removed - {version})

    def removing(self, version: int) -> VersionChoices:
        return replace(self, added=self.added - {version}, removed=self.removed | {version},
                       default=None if self.default == version else self.default)


@dataclass(frozen=True)
class ServedVersions:
    """What a server should serve of one model: `versions` oldest first, and the `default` answering requests that
    name no version (None when nothing is served)."""

    versions: tuple[int, ...]
    default: int | None

    def to_json(self) -> dict:
        return {"versions": list(self.versions), "default_version": self.default}


def plan_versions(packaged: Sequence[int], policy: VersionPolicy, choices: VersionChoices = VersionChoices()) -> ServedVersions:
    """The versions to serve: those the package's version policy selects among the `packaged` ones, plus the versions
    the operator loaded, minus those they unloaded; the default is the one `mfn set-default` chose while it is
    served, else the newest served."""
    available = set(packaged)
    served = (set(policy.select(list(available))) | (choices.added & available)) - choices.removed
    default = choices.default if choices.default in served else max(served, default=None)
    return ServedVersions(tuple(sorted(served)), default)




def check_served(action: str, model: str, version: int, served: Sequence[int], packaged: Sequence[int]) -> None:
    """Refuse `action` on a version that is not served, naming the versions that exist.

    Raises:
        MfnError: for a version that is not served (packaged or not).
    """
    if version not in served:
        state = "is packaged but not loaded" if version in packaged else "does not exist"
        raise MfnError(f"cannot {action} {model} v{version}: that version {state} ({what_exists(model, served, packaged)})")


def check_packaged(model: str, version: int, packaged: Sequence[int], where: str) -> None:
    """Refuse to load a version that is not in the deployment's repository or store.

    Raises:
        MfnError: naming the packaged versions and how to add one.
    """
    if version not in packaged:
        raise MfnError(f"{model} has no version {version} in {where} (packaged: {listing(packaged)}); package it there "
                       f"first: `mfn package ... --version {version} --output {where}`")


def choices_of(supervisor: Supervisor, model: str) -> VersionChoices:
    """The operator's choices for `model`: those made since the deploy, else the default kept from before it."""
    return supervisor.choices.get(model) or VersionChoices(default=state.recorded_defaults(supervisor.plan.name).get(model))


def plan_for(supervisor: Supervisor, model: str, choices: VersionChoices | None = None) -> ServedVersions:
    """What the version rule serves of `model` from its package as it is now and the operator's choices."""
    store = supervisor.store
    return plan_versions(store.packaged_versions(model), store.version_policy(model), choices or choices_of(supervisor, model))


def serve(supervisor: Supervisor, model: str, choices: VersionChoices | None = None, fresh: bool = False) -> None:
    """Make the server serve what the version rule says of `model` (deploy, load, unload --version, reload,
    set-default, after a restart), then the instance counts `mfn scale` set for it again when its versions changed
    (Triton builds them from config.pbtxt). The record is updated in memory; `save_versions` writes it."""
    assert supervisor.deployment is not None
    deployment, choices = supervisor.deployment, choices or choices_of(supervisor, model)
    planned = plan_for(supervisor, model, choices)
    changed = fresh or deployment.versions.get(model, {}).get("versions") != list(planned.versions)
    supervisor.server.serve_versions(deployment, supervisor.store, model, planned, fresh)
    supervisor.choices[model] = choices
    deployment.versions[model] = planned.to_json()
    for operation in supervisor.replay if changed else []:
        if operation.model == model and operation.action == "scale" and operation.count is not None:
            supervisor.server.scale_model(deployment, model, operation.count, operation.version)


def save_versions(supervisor: Supervisor) -> None:
    """Write what each model serves to the deployment's record."""
    deployment = supervisor.deployment
    assert deployment is not None
    served = {model: deployment.versions[model] for model in supervisor.models if model in deployment.versions}
    state.save(replace(deployment, versions=served))
