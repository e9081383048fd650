"""Operator controls on a running local deployment, the operator's side: load, unload, reload, scale, set-default
and describe.

Changes go through the deployment's supervisor, which owns the server: it performs them between its own health
checks (so it never "repairs" a model an operator just unloaded), remembers them, and applies them again after
it restarts a crashed server (mfn.local.commands). A request is a file in the work directory; the reply is a file
beside it.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mfn.files import write_json
from mfn.local import state
from mfn.local.launching import load_timeout_s
from mfn.progress import step
from mfn.local.servers import local_server
from mfn.local.state import Deployment
from mfn.errors import DeployError, MfnError
from mfn.kinds import StrEnum

if TYPE_CHECKING:
    pass

OPERATIONS_DIR = "operations"


class Action(StrEnum):
    LOAD = "load"
    UNLOAD = "unload"
    RELOAD = "reload"
    SCALE = "scale"
    SET_DEFAULT = "set-default"


OPERATIONS = tuple(action.value for action in Action)
REPLY_MARGIN_S = 30.0
POLL_S = 0.1


@dataclass(frozen=True)
class Operation:
    """One change asked of a supervisor."""

    action: str  # an Action's value (the mailbox holds JSON)
    model: str
    version: int | None = None
    count: int | None = None

    def describe(self) -> str:
        version = f" v{self.version}" if self.version is not None else ""
        count = f" to {self.count}" if self.count is not None else ""
        return f"{self.action} {self.model}{version}{count}"


@dataclass
class ModelDescription:
    """`mfn describe`: one model as its deployment serves it now."""

    model: str
    deployment: str
    server: str
    health: str
    versions: list[int] = field(default_factory=list)
    default_version: int | None = None  # mfn's clients' (mfn.local.versions)
    server_default_version: int | None = None  # other clients', as the server answers them
    instances: list[str] = field(default_factory=list)
    max_batch_size: int | None = None
    max_queue_delay_us: int | None = None
    endpoints: dict[str, str] = field(default_factory=dict)
    detail: str = ""

    def to_json(self) -> dict:
        return asdict(self)


def deployment_for(model: str, name: str | None) -> Deployment:
    """The named running deployment; else the one serving `model`; else the only one running."""
    if name:
        deployment = state.get(name)
    else:
        running = [d for d in state.all_deployments() if d.running]
        deployment = running[0] if len(running) == 1 and model not in running[0].models else state.find_serving(model)
    if not deployment.running:
        raise MfnError(f"deployment {deployment.name!r} is not running; start it with `mfn deploy`")
    return deployment


def perform(deployment: Deployment, operation: Operation) -> dict:
    """Ask the deployment's supervisor to carry out `operation` and wait for its answer.

    Raises:
        MfnError: the supervisor's reason (the server's own, where it refused), or that it did not answer.
    """
    if operation.action not in OPERATIONS:
        raise MfnError(f"unknown operation {operation.action!r}: use one of {', '.join(OPERATIONS)}")
    directory = Path(deployment.workdir) / OPERATIONS_DIR
    directory.mkdir(exist_ok=True, mode=0o700)
    ident = f"{time.time_ns()}-{secrets.token_hex(3)}"
    write_json(directory / f"{ident}.request.json", asdict(operation), indent=None)
    reply_file = directory / f"{ident}.reply.json"
    started = time.monotonic()
    deadline = started + load_timeout_s(deployment) + REPLY_MARGIN_S
    next_note = started + 10.0
    while not reply_file.exists():
        if not deployment.running:
            (directory / f"{ident}.request.json").unlink(missing_ok=True)
            raise DeployError(f"the supervisor of {deployment.name} ended before it answered `{operation.describe()}`")
        if time.monotonic() > deadline:
            (directory / f"{ident}.request.json").unlink(missing_ok=True)
            raise DeployError(f"the supervisor of {deployment.name} did not answer `{operation.describe()}` in "
                              f"{deadline - started:.0f} s; see `mfn logs {deployment.name}`")
        if time.monotonic() >= next_note:
            step(f"{operation.describe()}: still working ({time.monotonic() - started:.0f} s)")
            next_note += 10.0
        time.sleep(POLL_S)
    reply = json.loads(reply_file.read_text())
    reply_file.unlink()
    if reply.get("error"):
        raise DeployError(reply["error"])
    return reply.get("result") or {}


def load(model: str, version: int | None = None, deployment: str | None = None) -> dict:
    """Serve `model` as its package says now (the versions its policy names, newly packaged ones included), or add
    `version` beside those; package it into the deployment's repository or store first, no redeploy is needed."""
    return perform(deployment_for(model, deployment), Operation("load", model, version))


def unload(model: str, version: int | None = None, deployment: str | None = None) -> dict:
    """Stop serving `model`, or only its `version` (a served one; refused with the versions there are otherwise)."""
    return perform(deployment_for(model, deployment), Operation("unload", model, version))


def reload(model: str, deployment: str | None = None) -> dict:
    """Load `model` again from its files as they are now, versions and version policy included, as a deploy would;
    the operator's choices (loaded and unloaded versions, the default) are kept."""
    return perform(deployment_for(model, deployment), Operation("reload", model))


def scale(model: str, count: int, version: int | None = None, deployment: str | None = None) -> dict:
    """Run `count` instances (Triton: per instance group) or workers (TorchServe: per version) of `model`."""
    if count < 1:
        raise MfnError(f"scale {model}: the count must be at least 1 (got {count}); `mfn unload {model}` stops it")
    return perform(deployment_for(model, deployment), Operation("scale", model, version, count))


def set_default(model: str, version: int | None, deployment: str | None = None) -> Deployment:
    """Answer requests that name no version with `version` (None: the newest served again), on both servers (on
    Triton, for mfn's clients: see mfn.local.versions); kept for later deployments of the same name."""
    chosen = deployment_for(model, deployment)
    perform(chosen, Operation("set-default", model, version))
    return chosen


def describe(model: str, deployment: str | None = None) -> ModelDescription:
    """`model` as its deployment serves it now."""
    chosen = state.get(deployment) if deployment else state.find_serving(model)
    return describe_model(chosen, model)


def describe_model(deployment: Deployment, model: str) -> ModelDescription:
    """The model's served versions, default version, instances, batching, endpoints and health."""
    from mfn.local.supervision import read_status

    health = read_status(deployment).models.get(model)
    described = ModelDescription(
        model=model, deployment=deployment.name, server=deployment.server,
        health=health.health if health else "not loaded", detail=health.detail if health else "",
        endpoints=deployment.endpoints(),
    )
    if health is None or not deployment.running:
        return described
    server = local_server(deployment.server)
    try:
        described.versions = server.served_versions(deployment, model)
        described.server_default_version = server.default_version(deployment, model)
        details = server.model_details(deployment, model)
    except MfnError as error:
        described.detail = described.detail or str(error).splitlines()[0]
        return described
    described.default_version = deployment.versions.get(model, {}).get("default_version", described.server_default_version)
    described.instances = details["instances"]
    described.max_batch_size = details["max_batch_size"]
    described.max_queue_delay_us = details["max_queue_delay_us"]
    return described


def versions_of(deployment: Deployment) -> dict[str, dict]:
    """model -> {"versions": [...], "default_version": N} for each model of a running deployment, as its server
    reports them now; models the server cannot answer for are left out."""
    if not deployment.running:
        return {}
    server = local_server(deployment.server)
    served = {}
    for model in deployment.models:
        try:
            versions, own_default = server.served_versions(deployment, model), server.default_version(deployment, model)
        except MfnError:
            continue
        served[model] = {"versions": versions,
                         "default_version": deployment.versions.get(model, {}).get("default_version", own_default)}
    return served


def format_description(described: ModelDescription) -> str:
    versions = ", ".join(f"v{version}" for version in described.versions) or "none"
    default = f" (default v{described.default_version})" if described.default_version is not None else ""
    if described.server_default_version not in (None, described.default_version):
        default = (f" (default v{described.default_version} for mfn.Client and `mfn invoke`; v{described.server_default_version}"
                   f" for other clients that name no version)")
    if described.max_batch_size:
        delay = "" if described.max_queue_delay_us is None else f", queue delay {described.max_queue_delay_us} µs"
        batching = f"up to {described.max_batch_size} rows{delay}"
    else:
        batching = "off"
    lines = [
        f"{described.model} on {described.deployment} ({described.server}): {described.health}"
        + (f": {described.detail}" if described.detail else ""),
        f"  versions   {versions}{default}",
        f"  instances  {', '.join(described.instances) or '-'}",
        f"  batching   {batching}",
    ]
    lines += [f"  {protocol:10} {url}" for protocol, url in described.endpoints.items()]
    return "\n".join(lines)
