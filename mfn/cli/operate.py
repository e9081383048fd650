"""Operator commands on a running local deployment, named as Triton's and TorchServe's users look for them:
describe, load, unload, reload, scale, set-default, logs, and token for callers that are not mfn's. Each is a thin
layer over mfn.local.operations or mfn.local.deployments."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from mfn.cli.options import MfnCommand, json_option, progress_shown

deployment_option = click.option("--deployment", help="Local deployment (default: the one serving MODEL, or the only one).")
version_option = click.option("--version", "model_version", type=click.IntRange(min=1), help="Only this version.")


def _report(as_json: bool, model: str, action: str, result: dict, deployment: str | None) -> None:
    versions, default = result.get("versions", []), result.get("default_version")
    if as_json:
        click.echo(json.dumps({"model": model, "action": action, "versions": versions, "default_version": default}))
        return
    served = ", ".join(f"v{version}" for version in versions)
    said = f" (default v{default})" if default is not None else ""
    click.echo(f"{model}: {action}; serving {served}{said}" if versions else f"{model}: {action}; nothing served")


@click.command(cls=MfnCommand)
@click.argument("model")
@deployment_option
@json_option
def describe(model, deployment, as_json):
    """Show MODEL as its deployment serves it: versions, default version, instances, batching, endpoints, health."""
    from mfn.local import operations

    described = operations.describe(model, deployment)
    click.echo(json.dumps(described.to_json()) if as_json else operations.format_description(described))


@click.command(cls=MfnCommand)
@click.argument("model")
@version_option
@deployment_option
@json_option
def load(model, model_version, deployment, as_json):
    """Serve MODEL as its package says now: the versions its policy names (newly packaged ones too; the newest answers
    requests without a version unless `mfn set-default` chose one), or add one --version beside the served ones.
    Package it into the deployment's repository or store first; no redeploy is needed."""
    from mfn.local import operations

    with progress_shown(as_json):
        result = operations.load(model, model_version, deployment)
    _report(as_json, model, "loaded" if model_version is None else f"v{model_version} loaded", result, deployment)


@click.command(cls=MfnCommand)
@click.argument("model")
@version_option
@deployment_option
@json_option
def unload(model, model_version, deployment, as_json):
    """Stop serving MODEL, or only its --version; the deployment keeps running."""
    from mfn.local import operations

    result = operations.unload(model, model_version, deployment)
    _report(as_json, model, "unloaded" if model_version is None else f"v{model_version} unloaded", result, deployment)


@click.command(cls=MfnCommand)
@click.argument("model")
@deployment_option
@json_option
def reload(model, deployment, as_json):
    """Load MODEL again from its files as they are now, its versions and version policy included, as a deploy would;
    versions loaded or unloaded with --version and the default stay. Triton keeps answering with the old instances
    until the new ones are ready; TorchServe unregisters first, so requests in between get 404."""
    from mfn.local import operations

    with progress_shown(as_json):
        result = operations.reload(model, deployment)
    _report(as_json, model, "reloaded", result, deployment)


@click.command(cls=MfnCommand)
@click.argument("model")
@click.argument("count", type=click.IntRange(min=1))
@version_option
@deployment_option
@json_option
def scale(model, count, model_version, deployment, as_json):
    """Run COUNT instances of MODEL: per instance group on Triton (a reload with the new count, no gap), workers
    per version on TorchServe. Kept until undeploy, also across server restarts."""
    from mfn.local import operations

    with progress_shown(as_json):
        result = operations.scale(model, count, model_version, deployment)
    _report(as_json, model, f"scaled to {count}", result, deployment)


@click.command("set-default", cls=MfnCommand)
@click.argument("model")
@click.argument("version", type=click.IntRange(min=1), required=False)
@click.option("--newest", is_flag=True, help="Forget the choice: the newest served version answers again.")
@deployment_option
@json_option
def set_default(model, version, newest, deployment, as_json):
    """Answer requests to MODEL that name no version with VERSION, a served one, on both servers (on Triton through
    mfn.Client and `mfn invoke`: see Versions in docs/operations.md). Newly loaded versions do not take over; the
    choice is kept for later deployments of the same name."""
    from mfn.local import operations

    if (version is None) == (not newest):
        raise click.UsageError("give VERSION, or --newest to let the newest served version answer again")
    chosen = operations.set_default(model, version, deployment)
    if as_json:
        click.echo(json.dumps({"model": model, "default_version": version, "deployment": chosen.name}))
    else:
        click.echo(f"{model}'s newest served version" if newest else f"{model} v{version}", nl=False)
        click.echo(f" is now the default on {chosen.name}")


@click.command(cls=MfnCommand)
@click.argument("name")
@click.option("--lines", "-n", type=int, default=50, show_default=True, help="Lines from the end; 0 for all.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing lines as the server writes them, until Ctrl-C.")
@json_option
def logs(name, lines, follow, as_json):
    """Print the server log of deployment NAME (--json: one JSON object per line)."""
    from mfn.local import state
    from mfn.local.launching import log_tail

    deployment = state.get(name)
    log_file = Path(deployment.log_file)
    text = log_tail(deployment, lines) if lines else log_file.read_text(errors="replace")
    emit = (lambda line: click.echo(json.dumps({"deployment": name, "line": line}))) if as_json else click.echo
    for line in text.splitlines():
        emit(line)
    if follow:
        try:
            _follow(log_file, emit)
        except KeyboardInterrupt:
            pass


def _follow(log_file: Path, emit) -> None:
    """Print what is appended to `log_file`, across the rotation the supervisor does (a new, shorter file)."""
    position = log_file.stat().st_size if log_file.exists() else 0
    pending = ""
    while True:
        size = log_file.stat().st_size if log_file.exists() else 0
        if size < position:
            position = 0
        if size > position:
            with open(log_file, "rb") as handle:
                handle.seek(position)
                chunk = handle.read(size - position).decode(errors="replace")
            position = size
            *complete, pending = (pending + chunk).split("\n")
            for line in complete:
                emit(line)
        time.sleep(0.2)


@click.command(cls=MfnCommand)
@click.argument("name")
@click.option("--url", is_flag=True, help="Print the deployment's public HTTP URL instead.")
def token(name, url):
    """Print the key a caller of deployment NAME sends (`Authorization: Bearer KEY`); nothing where its inference is
    open (--no-auth). For curl and other clients: mfn.Client and `mfn invoke` read it themselves."""
    from mfn.local import deployments

    printed = deployments.public_url(name) if url else deployments.callers_key(name)
    if printed:
        click.echo(printed)


COMMANDS = (describe, load, unload, reload, scale, set_default, logs, token)
