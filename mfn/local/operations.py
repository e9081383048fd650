"""Operator controls on a running local deployment: load, unload, reload, scale, set-default and describe.

Changes go through the deployment's supervisor, which owns the server: it performs them between its own health
checks (so it never "repairs" a model an operator just unloaded), remembers them, and applies them again after
it restarts a crashed server. A request is a file in the work directory; the reply is a file beside it.
"""

from __future__ import annotations

import json
import secrets
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from mfn.files import write_json
from mfn.local import state
from mfn.local.launching import Progress, load_timeout_s, with_progress
from mfn.local.servers import local_server
from mfn.local.state import Deployment
from mfn.store import discover
from mfn.local.supervision import ModelHealth
from mfn.local.versions import check_packaged, check_served, choices_of, listing, plan_for, save_versions, serve
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
            progress(f"{operation.describe()}: still working ({time.monotonic() - started:.0f} s)")
            next_note += 10.0
        time.sleep(POLL_S)
    reply = json.loads(reply_file.read_text())
    reply_file.unlink()
    if reply.get("error"):
        raise DeployError(reply["error"])
    return reply.get("result") or {}


def load(model: str, version: int | None = None, deployment: str | None = None, progress: Progress = lambda m: None) -> dict:
    """Serve `model` as its package says now (the versions its policy names, newly packaged ones included), or add
    `version` beside those; package it into the deployment's repository or store first, no redeploy is needed."""
    return perform(deployment_for(model, deployment), Operation("load", model, version), progress)


def unload(model: str, version: int | None = None, deployment: str | None = None) -> dict:
    """Stop serving `model`, or only its `version` (a served one; refused with the versions there are otherwise)."""
    return perform(deployment_for(model, deployment), Operation("unload", model, version))


def reload(model: str, deployment: str | None = None, progress: Progress = lambda m: None) -> dict:
    """Load `model` again from its files as they are now, versions and version policy included, as a deploy would;
    the operator's choices (loaded and unloaded versions, the default) are kept."""
    return perform(deployment_for(model, deployment), Operation("reload", model), progress)


def scale(model: str, count: int, version: int | None = None, deployment: str | None = None,
          progress: Progress = lambda m: None) -> dict:
    """Run `count` instances (Triton: per instance group) or workers (TorchServe: per version) of `model`."""
    if count < 1:
        raise MfnError(f"scale {model}: the count must be at least 1 (got {count}); `mfn unload {model}` stops it")
    return perform(deployment_for(model, deployment), Operation("scale", model, version, count), progress)


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
        write_json(request_file.with_name(request_file.name.replace(".request.", ".reply.")), reply, indent=None)
        request_file.unlink(missing_ok=True)


def carry_out(supervisor: Supervisor, operation: Operation, remember: bool = True) -> dict:  # noqa: C901
    """One operator request, carried out by the deployment's supervisor between its health checks, by the version
    rule of mfn.local.versions; raises MfnError with the reason it was refused."""
    assert supervisor.deployment is not None
    deployment, model, version, action = supervisor.deployment, operation.model, operation.version, operation.action
    if action in ("load", "reload"):
        supervisor.store = discover(Path(supervisor.plan.path))  # it may have been packaged again since
    if action == "load" and model not in supervisor.store.models:
        raise MfnError(f"{model} is not in {supervisor.store.root} (it has {', '.join(supervisor.store.models)}); "
                       f"package it there first")
    if action != "load" and model not in supervisor.models:
        raise MfnError(f"{deployment.name} does not serve {model} (it serves {', '.join(supervisor.models) or 'nothing'})")
    packaged = supervisor.store.packaged_versions(model)
    if version is not None and action == "load":
        check_packaged(model, version, packaged, str(supervisor.store.root))
    elif version is not None:
        check_served("set the default to" if action == "set-default" else action, model, version,
                     _served_now(supervisor, model), packaged)
    supervisor.retire(model)
    choices = choices_of(supervisor, model)
    if action == "unload" and version is None:
        return _unload(supervisor, model)
    if action == "scale":
        if operation.count is None:
            raise MfnError("scale needs a count of instances")
        supervisor.server.scale_model(deployment, model, operation.count, version)
        if remember:
            supervisor.replay.append(operation)
        supervisor.record_health(model)
        return _served_reply(supervisor, model)
    if action == "load" and version is not None:
        choices = choices.adding(version)
    elif action == "unload":
        choices = choices.removing(version)  # type: ignore[arg-type]
    elif action == "set-default":
        choices = replace(choices, default=version)
    if choices.default != choices_of(supervisor, model).default:
        state.record_default(deployment.name, model, choices.default)
    if not plan_for(supervisor, model, choices).versions:
        if model not in supervisor.models:
            raise MfnError(f"the version policy of {model} names none of its packaged versions ({listing(packaged)}): "
                           f"package it again with another --version-policy, or `mfn load {model} --version N`")
        return _unload(supervisor, model)
    with_progress(lambda: serve(supervisor, model, choices, fresh=action == "reload"), _to_log,
                  f"{model}: still loading", supervisor.plan.load_timeout_s)
    if model not in supervisor.models:
        _serve(supervisor, model, True)
    save_versions(supervisor)
    supervisor.record_health(model)
    return _served_reply(supervisor, model)


def restore(supervisor: Supervisor, why: str) -> None:
    """After a restart: each model's versions and default as the rule says (the server preloaded its policy's),
    then the instance counts of `mfn scale`."""
    for model in supervisor.models:
        try:
            serve(supervisor, model)
        except MfnError as error:
            _to_log(f"after the {why}, serving {model}'s versions failed: {error}")
    save_versions(supervisor)
    for operation in supervisor.replay:
        try:
            carry_out(supervisor, operation, remember=False)
        except MfnError as error:
            _to_log(f"after the {why}, `{operation.describe()}` failed: {error}")


def _served_now(supervisor: Supervisor, model: str) -> list[int]:
    assert supervisor.deployment is not None
    try:
        return supervisor.server.served_versions(supervisor.deployment, model)
    except MfnError:  # the server will not list them (TorchServe's token* names): the record says
        return supervisor.deployment.versions.get(model, {}).get("versions", [])


def _served_reply(supervisor: Supervisor, model: str) -> dict:
    assert supervisor.deployment is not None
    default = supervisor.deployment.versions.get(model, {}).get("default_version")
    return {"versions": _served_now(supervisor, model), "default_version": default}


def _unload(supervisor: Supervisor, model: str) -> dict:
    assert supervisor.deployment is not None
    supervisor.server.unload_model(supervisor.deployment, model)
    supervisor.choices.pop(model, None)
    supervisor.deployment.versions.pop(model, None)
    _serve(supervisor, model, False)
    save_versions(supervisor)
    return {"versions": [], "default_version": None}


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
