"""`mfn deploy`'s two places: the chart on Kubernetes, and supervised server processes on this machine."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import click

from mfn.cli.options import progress_shown


def to_kubernetes(path: Path, verify: bool, public_key: Path | None, options: dict[str, Any]) -> None:
    """`options`: what kubernetes_options parsed."""
    from mfn.kubernetes import helm

    if not options["release"]:
        raise click.UsageError("--target kubernetes needs --release NAME")
    click.echo(helm.deploy(path, options["release"], options["namespace"], options["model_uri"], options["pvc"],
                           options["sets"], options["dry_run"], verify=verify, public_key=public_key), nl=False)


def _local_deploy_keywords(options: dict[str, Any]) -> dict[str, Any]:
    """What local_deploy_options parsed, as mfn.deploy's keywords."""
    return {"name": options["name"], "models": list(options["models"]) or None, "auth": not options["no_auth"],
            "monitor": options["prometheus"], "drain_timeout_s": options["drain_timeout_s"],
            "max_request_bytes": int(options["max_request_mb"] * 1024 * 1024), "jvm_heap_mb": options["jvm_heap_mb"],
            "host": options["host"], "load_timeout_s": options["load_timeout_s"],
            "ports": {protocol: options[f"{protocol}_port"] for protocol in ("http", "grpc", "metrics")},
            "idle_timeout_s": options["idle_timeout_s"], "proxy": options["proxy"]}


def to_local(path: Path, as_json: bool, verify: bool, public_key: Path | None, options: dict[str, Any]) -> None:
    """`options`: what local_deploy_options parsed."""
    from mfn.local import deployments
    from mfn.local.launching import terminate_interrupts

    foreground = options["foreground"]
    # In the foreground, SIGTERM stops the deployment as Ctrl-C does, also while the models load.
    with terminate_interrupts() if foreground else contextlib.nullcontext(), progress_shown(as_json):
        deployment = deployments.deploy(path, verify=verify, public_key=public_key, **_local_deploy_keywords(options))
        if as_json:
            click.echo(json.dumps(deployment.to_json()))
        else:
            click.echo(f"deployed {deployment.name}: {', '.join(deployment.models)}")
            for protocol, url in deployment.endpoints().items():
                click.echo(f"  {protocol:8} {url}")
        if foreground:
            try:
                deployments.wait_until_stopped(deployment)
            except KeyboardInterrupt:
                click.echo(f"stopping {deployment.name} ...", err=True)
            deployments.undeploy(deployment.name)
