"""Operator controls on a running local deployment: load, unload, reload, scale, set-default and describe.

Changes go through the deployment's supervisor, which owns the server: it performs them between its own health
checks (so it never "repairs" a model an operator just unloaded), remembers them, and applies them again after
it restarts a crashed server. A request is a file in the work directory; the reply is a file beside it.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mfn.local import state
from mfn.local.launching import Progress, load_timeout_s, with_progress
from mfn.local.servers import local_server
from mfn.local.state import Deployment
from mfn.local.store import discover
from mfn.local.supervision import ModelHealth
from mfn.errors import DeployError, MfnError

if TYPE_CHECKING:
    from mfn.local.supervisor import Supervisor

OPERATIONS_DIR = "operations"
OPERATIONS = ("load", "unload", "reload", "scale", "set-default")
REPLY_MARGIN_S = 30.0
POLL_S = 0.1


@dataclass(frozen=True)
class Operation:
    """One change asked of a supervisor."""

    action: str  # one of OPERATIONS
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
    default_version: int | None = None
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


def perform(deployment: Deployment, operation: Operation, progress: Progress = lambda message: None) -> dict:
    """Ask the deployment's supervisor to carry out `operation` and wait for its answer.

    Raises:
        MfnError: the supervisor's reason (the server's own, where it refused), or that it did not answer.
    """
    if operation.action not in OPERATIONS:
        raise MfnError(f"unknown operation {operation.action!r}: use one of {', '.join(OPERATIONS)}")
    directory = Path(deployment.workdir) / OPERATIONS_DIR
    directory.mkdir(exist_ok=True, mode=0o700)
    ident = f"{time.time_ns()}-{secrets.token_hex(3)}"
    fd, temp = tempfile.mkstemp(dir=directory, prefix=".", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump(asdict(operation), handle)
    os.replace(temp, directory / f"{ident}.request.json")
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
            progress(f"{operation.describe()}: still working ({time.monotonic() - started:.0f} s)")
            next_note += 10.0
        time.sleep(POLL_S)
    reply = json.loads(reply_file.read_text())
    reply_file.unlink()
    if reply.get("error"):
        raise DeployError(reply["error"])
    return reply.get("result") or {}


def load(model: str, version: int | None = None, deployment: str | None = None, progress: Progress = lambda m: None) -> dict:
    """Load `model` (the versions its policy names) into a running deployment, or add `version` beside those it serves.

    The model must be in the deployment's repository or store (package it there first); no redeploy is needed.
    """
    return perform(deployment_for(model, deployment), Operation("load", model, version), progress)


def unload(model: str, version: int | None = None, deployment: str | None = None) -> dict:
    """Stop serving `model`, or only its `version`."""
    return perform(deployment_for(model, deployment), Operation("unload", model, version))


def reload(model: str, deployment: str | None = None, progress: Progress = lambda m: None) -> dict:
    """Load `model` again from its files as they are now (after re-packaging the same version, say)."""
    return perform(deployment_for(model, deployment), Operation("reload", model), progress)


def scale(model: str, count: int, version: int | None = None, deployment: str | None = None,
          progress: Progress = lambda m: None) -> dict:
    """Run `count` instances (Triton: per instance group) or workers (TorchServe: per version) of `model`."""
    if count < 1:
        raise MfnError(f"scale {model}: the count must be at least 1 (got {count}); `mfn unload {model}` stops it")
    return perform(deployment_for(model, deployment), Operation("scale", model, version, count), progress)


def set_default(model: str, version: int, deployment: str | None = None) -> Deployment:
    """Serve `version` to requests naming none (TorchServe), kept for later deployments of the same name."""
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
        described.default_version = server.default_version(deployment, model)
        details = server.model_details(deployment, model)
    except MfnError as error:
        described.detail = described.detail or str(error).splitlines()[0]
        return described
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
            served[model] = {"versions": server.served_versions(deployment, model),
                             "default_version": server.default_version(deployment, model)}
        except MfnError:
            continue
    return served


def format_description(described: ModelDescription) -> str:
    versions = ", ".join(f"v{version}" for version in described.versions) or "none"
    default = f" (default v{described.default_version})" if described.default_version is not None else ""
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


def has_requests(workdir: Path) -> bool:
    """Whether an operator request waits for the supervisor."""
    return any((workdir / OPERATIONS_DIR).glob("*.request.json"))


def serve_requests(workdir: Path, carry_out) -> None:
    """The supervisor's side: carry out each waiting request, oldest first, and write its reply beside it.

    `carry_out(operation)` returns the result, or raises MfnError with a reason for the caller.
    """
    directory = workdir / OPERATIONS_DIR
    if not directory.is_dir():
        return
    for request_file in sorted(directory.glob("*.request.json")):
        try:
            operation = Operation(**json.loads(request_file.read_text()))
            reply = {"result": carry_out(operation)}
        except (MfnError, TypeError, ValueError) as error:
            reply = {"error": str(error)}
        fd, temp = tempfile.mkstemp(dir=directory, prefix=".", suffix=".tmp")
        with os.fdopen(fd, "w") as handle:
            json.dump(reply, handle)
        os.replace(temp, request_file.with_name(request_file.name.replace(".request.", ".reply.")))
        request_file.unlink(missing_ok=True)


def carry_out(supervisor: Supervisor, operation: Operation, remember: bool = True) -> dict:
    """One operator request, carried out by the deployment's supervisor between its health checks; raises
    MfnError with the reason it was refused."""
    assert supervisor.deployment is not None
    deployment, model, version = supervisor.deployment, operation.model, operation.version
    if operation.action == "load":
        supervisor.store = discover(Path(supervisor.plan.path))  # it may have been packaged after the deploy
        if model not in supervisor.store.models:
            raise MfnError(f"{model} is not in {supervisor.store.root} (it has {', '.join(supervisor.store.models)}); "
                           f"package it there first")
    elif model not in supervisor.models:
        raise MfnError(f"{deployment.name} does not serve {model} (it serves {', '.join(supervisor.models) or 'nothing'})")
    supervisor.retire(model)
    if operation.action == "load":
        if version is None or model not in supervisor.models:
            with_progress(lambda: supervisor.server.load_model(deployment, supervisor.store, model), _to_log,
                          f"{model}: still loading", supervisor.plan.load_timeout_s)
        if version is not None:
            supervisor.server.load_version(deployment, supervisor.store, model, version)
        if model not in supervisor.models:
            _serve(supervisor, model, True)
    elif operation.action == "unload":
        supervisor.server.unload_model(deployment, model, version)
        if version is None:
            _serve(supervisor, model, False)
            return {"versions": []}
    elif operation.action == "reload":
        supervisor.store = discover(Path(supervisor.plan.path))
        supervisor.server.restart_model(deployment, supervisor.store, model)
    elif operation.action == "scale":
        supervisor.server.scale_model(deployment, model, operation.count, version)
    elif operation.action == "set-default":
        supervisor.server.set_default_version(deployment, model, version)
        state.record_default(deployment.name, model, version)
    if remember and (operation.action == "scale" or operation.action in ("load", "unload") and version is not None):
        supervisor.replay.append(operation)
    supervisor.record_health(model)
    try:
        return {"versions": supervisor.server.served_versions(deployment, model)}
    except MfnError:
        return {"versions": []}  # done, but the server will not list them (TorchServe's token* names)


def _serve(supervisor: Supervisor, model: str, serving: bool) -> None:
    """Add `model` to (or drop it from) what this deployment serves, in its record and its status."""
    assert supervisor.deployment is not None
    if serving:
        supervisor.models.append(model)
        supervisor.status.models[model] = ModelHealth()
    else:
        supervisor.models.remove(model)
        supervisor.status.models.pop(model, None)
        supervisor.replay = [operation for operation in supervisor.replay if operation.model != model]
    supervisor.deployment.models = list(supervisor.models)
    # The record on disk may have gained fields since this process wrote it (`mfn deploy --prometheus` adds
    # its Prometheus): change only the models.
    record = state.load(supervisor.deployment.name) or supervisor.deployment
    record.models = list(supervisor.models)
    state.save(record)
    supervisor.save_status()


def _to_log(message: str) -> None:
    """The supervisor's stderr is its log file."""
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}", file=sys.stderr, flush=True)
