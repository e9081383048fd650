"""Operator requests, the supervisor's side: read from the deployment's mailbox and carried out between health
checks, one function per action (mfn.local.operations writes them and waits for the reply)."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from mfn.errors import MfnError
from mfn.files import write_json
from mfn.local import state
from mfn.local.launching import with_progress
from mfn.local.operations import OPERATIONS_DIR, Action, Operation
from mfn.local.supervision import ModelHealth
from mfn.kinds import listing
from mfn.local.versions import check_packaged, check_served, choices_of, plan_for, save_versions, serve
from mfn.store import discover

_to_log = logging.getLogger(__name__).info

if TYPE_CHECKING:
    from mfn.local.supervisor import Supervisor
    from mfn.local.versions import VersionChoices


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


def carry_out(supervisor: Supervisor, operation: Operation, remember: bool = True) -> dict:
    """One operator request, carried out by the deployment's supervisor between its health checks, by the version
    rule of mfn.local.versions; raises MfnError with the reason it was refused."""
    action = Action(operation.action)
    _check(supervisor, operation, action)
    supervisor.retire(operation.model)
    return _CARRIED_OUT[action](supervisor, operation, remember)


def _check(supervisor: Supervisor, operation: Operation, action: Action) -> None:
    """Refuse a request for a model the deployment neither serves nor has packaged, or for a version it lacks."""
    assert supervisor.deployment is not None
    model, version = operation.model, operation.version
    if action in (Action.LOAD, Action.RELOAD):
        supervisor.store = discover(Path(supervisor.plan.path))  # it may have been packaged again since
    if action == Action.LOAD and model not in supervisor.store.models:
        raise MfnError(f"{model} is not in {supervisor.store.root} (it has {', '.join(supervisor.store.models)}); "
                       f"package it there first")
    if action != Action.LOAD and model not in supervisor.models:
        raise MfnError(f"{supervisor.deployment.name} does not serve {model} "
                       f"(it serves {', '.join(supervisor.models) or 'nothing'})")
    packaged = supervisor.store.packaged_versions(model)
    if version is not None and action == Action.LOAD:
        check_packaged(model, version, packaged, str(supervisor.store.root))
    elif version is not None:
        check_served("set the default to" if action == Action.SET_DEFAULT else action.value, model, version,
                     _served_now(supervisor, model), packaged)
    if action == Action.SCALE and operation.count is None:
        raise MfnError(f"scale {model} needs a count of instances")


def _scale(supervisor: Supervisor, operation: Operation, remember: bool) -> dict:
    assert supervisor.deployment is not None and operation.count is not None
    supervisor.server.scale_model(supervisor.deployment, operation.model, operation.count, operation.version)
    if remember:
        supervisor.replay.append(operation)
    supervisor.record_health(operation.model)
    return _served_reply(supervisor, operation.model)


def _load(supervisor: Supervisor, operation: Operation, remember: bool) -> dict:
    choices = choices_of(supervisor, operation.model)
    if operation.version is not None:
        choices = choices.adding(operation.version)
    return _serve_choices(supervisor, operation.model, choices)


def _unload_action(supervisor: Supervisor, operation: Operation, remember: bool) -> dict:
    if operation.version is None:
        return _unload(supervisor, operation.model)
    return _serve_choices(supervisor, operation.model, choices_of(supervisor, operation.model).removing(operation.version))


def _reload(supervisor: Supervisor, operation: Operation, remember: bool) -> dict:
    return _serve_choices(supervisor, operation.model, choices_of(supervisor, operation.model), fresh=True)


def _set_default(supervisor: Supervisor, operation: Operation, remember: bool) -> dict:
    return _serve_choices(supervisor, operation.model, replace(choices_of(supervisor, operation.model),
                                                                default=operation.version))


def _serve_choices(supervisor: Supervisor, model: str, choices: VersionChoices, fresh: bool = False) -> dict:
    """Serve what the operator's version choices and the policy make of the packaged versions (nothing: unload)."""
    assert supervisor.deployment is not None
    if choices.default != choices_of(supervisor, model).default:
        state.record_default(supervisor.deployment.name, model, choices.default)
    if not plan_for(supervisor, model, choices).versions:
        if model not in supervisor.models:
            raise MfnError(f"the version policy of {model} names none of its packaged versions "
                           f"({listing(supervisor.store.packaged_versions(model))}): package it again with another "
                           f"--version-policy, or `mfn load {model} --version N`")
        return _unload(supervisor, model)
    with_progress(lambda: serve(supervisor, model, choices, fresh=fresh),
                  f"{model}: still loading", supervisor.plan.options.load_timeout_s)
    if model not in supervisor.models:
        _serve(supervisor, model, True)
    save_versions(supervisor)
    supervisor.record_health(model)
    return _served_reply(supervisor, model)


_CARRIED_OUT = {
    Action.LOAD: _load, Action.UNLOAD: _unload_action, Action.RELOAD: _reload, Action.SCALE: _scale,
    Action.SET_DEFAULT: _set_default,
}

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
    from mfn.proxy import fronting

    fronted_as = supervisor.plan.options.track_of or supervisor.plan.name  # a canary is behind its primary's proxy
    try:  # before clients are let in: the proxy in front, if any, must speak to this server with its keys and ports
        if fronting.follow_tracks(fronted_as, give_up=lambda: supervisor.stop_requested):
            _to_log(f"after the {why}, the proxy in front was given the server's new keys or ports")
    except (OSError, MfnError) as error:  # the controller's next tick tries again
        _to_log(f"after the {why}, the proxy in front did not follow the server: {error}")


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
    state.save(supervisor.deployment)
    supervisor.save_status()


