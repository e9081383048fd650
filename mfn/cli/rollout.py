"""`mfn rollout start|status|promote|abort`: a thin layer over mfn.proxy.rollout."""

from __future__ import annotations

import json
import time

import click

from mfn.cli.options import Duration, MfnCommand, MfnSubGroup, json_option, progress_shown
from mfn.kinds import Target

STRATEGIES = ("canary", "blue-green", "ab", "shadow")
ENDED = ("promoted", "rolled back")  # RolloutState's ends, named here without importing the proxy




def _steps(ctx, param, value: str | None) -> list[float]:
    if not value:
        return []
    try:
        return [float(step) for step in value.split(",")]
    except ValueError:
        raise click.BadParameter(f"{value!r}: percentages separated by commas, e.g. 5,25,50,100", ctx, param) from None


def _header(ctx, param, value: str | None) -> tuple[str | None, str | None]:
    if not value:
        return None, None
    key, separator, wanted = value.partition("=")
    return key.strip(), wanted if separator else None


target_option = click.option("--target", type=click.Choice(["local", "kubernetes"]), default="local", show_default=True,
                             help="A local deployment, or a Helm release of mfn's chart.")
namespace_option = click.option("--namespace", default="default",
                                help="kubernetes: the release's namespace (default: the one named default).")


@click.group(cls=MfnSubGroup)
def rollout():
    """Serve a new package beside a deployment and move traffic to it: canary, blue-green, A/B or shadow."""


@rollout.command(cls=MfnCommand)
@click.argument("name")
@click.argument("path", type=click.Path(exists=True))
@click.option("--strategy", type=click.Choice(STRATEGIES), default="canary", show_default=True,
              help="canary: a share of requests at random; blue-green: all at once after the new track is warm and "
                   "healthy; ab: requests matching --header; shadow: a copy of every request, answers dropped.")
@click.option("--weight", type=click.FloatRange(0, 100), help="Percent of requests for the new track (canary: 10; ab "
              "with --header KEY: 50).")
@click.option("--steps", callback=_steps, help="Canary weights to step through, ending at 100 (promoted), e.g. 5,25,50,100.")
@click.option("--step-interval", type=Duration(), default="30s", show_default=True, help="Time on each step.")
@click.option("--max-error-ratio", type=click.FloatRange(0, 1), help="Roll back when the new track's error ratio over the "
              "current step is above this.")
@click.option("--max-p99-ms", type=click.FloatRange(min=0, min_open=True), help="Roll back when the new track's p99 "
              "predict time over the current step is above this.")
@click.option("--header", callback=_header, help="ab: KEY=VALUE sends requests whose header KEY is VALUE to the new "
              "track; KEY alone hashes its value, so each caller stays on one track (--weight percent of them new).")
@target_option
@click.option("--http-port", type=click.IntRange(1, 65535), help="The proxy's HTTP port at a deployment's first rollout.")
@click.option("--grpc-port", type=click.IntRange(1, 65535), help="The proxy's gRPC port at a deployment's first rollout.")
@click.option("--model-uri", help="kubernetes: where the cluster fetches the new package (https://, s3://, gs://).")
@click.option("--pvc", help="kubernetes: a PersistentVolumeClaim holding the new package instead.")
@namespace_option
@click.option("--gateway", "gateways", multiple=True, help="kubernetes: a Gateway ([NAMESPACE/]NAME) the routes attach "
              "to; without one, only blue-green works (by the Service's selector).")
@click.option("--engine", type=click.Choice(["mfn", "argo"]), default="mfn", show_default=True,
              help="kubernetes: mfn (a second Deployment, weights set by these commands) or argo (Argo Rollouts steps, "
                   "judges and promotes with an AnalysisTemplate on mfn's metrics).")
@click.option("--values-only", is_flag=True, help="kubernetes: print the values the upgrade merges into the release's; "
              "run nothing.")
@click.option("--dry-run", is_flag=True, help="local: print the proxy configuration the rollout would use; kubernetes: "
              "helm's own dry run of the upgrade (it reads the release from the cluster). Start nothing.")
@json_option
def start(name, path, strategy, target, as_json, **options):
    """Serve the package at PATH as the new track of deployment NAME and route traffic to it by the strategy.

    The first rollout of a deployment puts nginx in front of it: its endpoints become the proxy's (printed, and
    found by name by mfn.Client and `mfn invoke`) and stay through this and later rollouts."""
    from mfn.proxy import rollout as rollouts

    judged = {key: options[key] for key in ("steps", "step_interval", "max_error_ratio", "max_p99_ms")}
    try:
        planned = rollouts.plan(strategy, path, name, options["weight"], judged["steps"], judged["step_interval"],
                                judged["max_error_ratio"], judged["max_p99_ms"], *options["header"])
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    if target == Target.KUBERNETES:
        from pathlib import Path

        from mfn.kubernetes import rollout as kubernetes

        values = kubernetes.rollout_values(Path(path), name, options["model_uri"], options["pvc"], strategy, planned.weight,
                                           *options["header"], options["gateways"], options["engine"], *judged.values())
        click.echo(json.dumps(values, indent=2, sort_keys=True) if options["values_only"]
                   else kubernetes.upgrade(name, options["namespace"], values, options["dry_run"]))
        return
    if options["dry_run"]:
        click.echo(rollouts.run_dry(name, planned), nl=False)
        return
    with progress_shown(as_json):
        route = rollouts.start(name, planned, {"http": options["http_port"], "grpc": options["grpc_port"]})
    report = rollouts.status(name)
    if as_json:
        click.echo(json.dumps(report))
        return
    click.echo(f"{name}: {strategy} rollout of {path} started, {route.rollout.weight:g}% to the new track")
    click.echo("\n".join(f"  {protocol:5} {url}" for protocol, url in report["endpoints"].items()))


@rollout.command(cls=MfnCommand, name="status")
@click.argument("name")
@target_option
@namespace_option
@json_option
def status_command(name, target, namespace, as_json):
    """The rollout's state and why, weights, and each track's requests, error ratio and p50/p99 predict time
    (kubernetes: the rollout values of the release)."""
    if target == Target.KUBERNETES:
        from mfn.kubernetes import rollout as kubernetes

        values = kubernetes.current_values(name, namespace).get("rollout") or {}
        report = {"name": name, "namespace": namespace, "rollout": values}
        click.echo(json.dumps(report) if as_json else format_release_status(report))
        return
    from mfn.proxy import rollout as rollouts

    report = rollouts.status(name)
    click.echo(json.dumps(report) if as_json else format_status(report))


def format_release_status(report: dict) -> str:
    values = report["rollout"]
    if not values.get("enabled"):
        return f"{report['name']} (namespace {report['namespace']}): no rollout under way"
    steps = f", steps {','.join(f'{step:g}' for step in values['steps'])}" if values.get("steps") else ""
    return (f"{report['name']} (namespace {report['namespace']}): {values.get('strategy')} rollout by "
            f"{values.get('engine')}, {values.get('weight', 0):g}% to the new track{steps}")


def format_status(report: dict) -> str:  # noqa: C901
    active = report["rollout"]
    lines = [f"{report['name']}: proxy {'running' if report['proxy_running'] else 'NOT running'}, "
             + ", ".join(f"{protocol} {url}" for protocol, url in report["endpoints"].items())]
    if active and active["state"] in ENDED:
        # What the tracks did while it ran no longer describes the traffic: say how and when it ended instead.
        ended_at = active["history"][-1]["at"] if active["history"] else active["last_step_at"]
        started, ended = _clock(active["started_at"]), _clock(ended_at)
        lines.append(f"  rollout: {active['strategy']} of {active['path']}, {started} to {ended}: {active['state']}"
                     + (f" ({active['why']})" if active["why"] and active["why"] != active["state"] else "")
                     + "; all traffic on the primary")
    elif active:
        lines.append(f"  rollout: {active['strategy']} of {active['path']} since {_clock(active['started_at'])}: "
                     f"{active['state']}" + (f" ({active['why']})" if active["why"] and active["why"] != active["state"] else ""))
        if report.get("weights"):
            lines.append(f"  weights: primary {report['weights']['primary']:g}%, canary {report['weights']['canary']:g}%")
        if active.get("analysis"):
            analysis = active["analysis"]
            for track in ("primary", "canary"):
                if track in analysis:
                    figures = analysis[track]
                    ratio = "-" if figures["error_ratio"] is None else f"{figures['error_ratio']:.3f}"
                    p99 = "-" if figures["p99_ms"] is None else f"{figures['p99_ms']:.1f} ms"
                    lines.append(f"  last {analysis['window_s']:g} s, {track}: {figures['requests']} requests, "
                                 f"error ratio {ratio}, p99 {p99}")
    for track, described in report["tracks"].items():
        if not described["models"]:
            lines.append(f"  {track} ({described['deployment']}): no requests yet")
        for row in described["models"]:
            if "error" in row:
                lines.append(f"  {track} ({described['deployment']}): {row['error']}")
                continue
            rate = "-" if row["error_rate"] is None else f"{row['error_rate']:.3f}"
            p50 = "-" if row["predict_p50_s"] is None else f"{row['predict_p50_s'] * 1000:.2f} ms"
            p99 = "-" if row["predict_p99_s"] is None else f"{row['predict_p99_s'] * 1000:.2f} ms"
            lines.append(f"  {track} ({described['deployment']}) {row['model']} v{row['version']}: {row['requests']} "
                         f"requests, error ratio {rate}, predict p50 {p50}, p99 {p99}")
    return "\n".join(lines)


def _clock(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at))



@rollout.command(cls=MfnCommand)
@click.argument("name")
@target_option
@namespace_option
@json_option
def promote(name, target, namespace, as_json):
    """The new track takes all traffic; the deployment is started again from the new package, the old track is
    drained and stopped. No request is lost."""
    from mfn.proxy import rollout as rollouts

    if target == Target.KUBERNETES:
        from mfn.kubernetes import rollout as kubernetes

        click.echo(kubernetes.upgrade(name, namespace, kubernetes.promote_values(kubernetes.current_values(name, namespace))))
        return

    with progress_shown(as_json):
        rollouts.promote(name)
    click.echo(json.dumps(rollouts.status(name)) if as_json else f"{name}: promoted")


@rollout.command(cls=MfnCommand)
@click.argument("name")
@target_option
@namespace_option
@json_option
def abort(name, target, namespace, as_json):
    """All traffic back on the deployment at once; the new track is drained and stopped."""
    from mfn.proxy import rollout as rollouts

    if target == Target.KUBERNETES:
        from mfn.kubernetes import rollout as kubernetes

        click.echo(kubernetes.upgrade(name, namespace, kubernetes.abort_values()))
        return

    with progress_shown(as_json):
        rollouts.abort(name)
    click.echo(json.dumps(rollouts.status(name)) if as_json else f"{name}: rolled back")
