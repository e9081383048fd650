"""The `mfn` command: thin click commands over the library functions of the same names."""

from __future__ import annotations

import json
from pathlib import Path

import click

from mfn.cli import deploying, operate, tune
from mfn.cli.rollout import rollout
from mfn.cli.options import (MfnGroup, cache_option, instances_option, invoke_data, json_option, kubernetes_options,
                             local_deploy_options, module_inputs_option, refuse_other_scope, scoped, server_option,
                             tensors_option, tuned_option)
from mfn.kinds import ARCHIVE_FORMATS, DEPLOY_TARGETS, EXPORT_FORMATS, PROTOCOLS, QUANTIZATIONS, SERVERS, TENSOR_ENCODINGS, Target


@click.group(cls=MfnGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mfn-serve")
def cli() -> None:
    """mfn: package one handler class for Triton or TorchServe, deploy it, invoke it."""


@cli.command()
@click.argument("refs", metavar="REF...", nargs=-1, required=True)
@server_option("Server to package for.")
@click.option("--output", "-o", type=click.Path(path_type=Path), required=True, help="Model repository (Triton) or model store (TorchServe) directory.")
@click.option("--archive-format", type=click.Choice(ARCHIVE_FORMATS), default="default",
              help="TorchServe archive format: default (a .mar file, the default), no-archive (a directory) or tgz.")
@click.option("--native", is_flag=True, help="Model files on Triton: use Triton's native backend (onnxruntime_onnx, pytorch_libtorch, "
                   "tensorflow_savedmodel) instead of mfn's Python adapter.")
@click.option("--name", help="Override the model name.")
@click.option("--version", "model_version", type=int, help="Override the model version.")
@click.option("--max-batch-size", type=int, help="Override batching.max_batch_size.")
@click.option("--max-queue-delay-us", type=int, help="Override batching.max_queue_delay_us.")
@instances_option
@tensors_option
@click.option("--version-policy", help="Versions served side by side: all, latest[:N] or specific:1,2.")
@click.option("--warmup", type=int, help="Warm up with this many rows per request when the model loads.")
@click.option("--execution-env", help="Python environment for Triton's stub (EXECUTION_ENV_PATH).")
@click.option("--bundle-env", is_flag=True, help="Also pack the installed environment (mfn + pinned requirements) into the "
                   "package, for pods with no package index (the chart's requirements.mode=bundle).")
@click.option("--allow-pickle", is_flag=True, help="Trust pickled objects in the model file (a .pt2's pickled payloads "
                   "run code when loaded); without it such files are refused.")
@tuned_option
@cache_option
@json_option
def package(refs, server, output, name, as_json, **options):
    """Package each REF into OUTPUT: a handler (path/to/handler.py:Class, package.module:Class) or a model file
    that a built-in handler serves with no handler code: .onnx, TorchScript .pt/.ts (give --input),
    torch.export .pt2, a TensorFlow SavedModel directory, Keras .keras/.h5, or .tflite. Several REFs package
    many functions in one call (the other options apply to each; --json prints one object per line)."""
    from mfn.errors import MfnError
    from mfn.handlers.declarations import VersionPolicy
    from mfn.packaging import package as package_model

    if len(refs) > 1 and name:
        raise click.UsageError("--name names one model: leave it out with several REFs (each keeps its declared name)")
    batching = {key: options[key] for key in ("max_batch_size", "max_queue_delay_us") if options[key] is not None}
    try:
        policy = VersionPolicy.parse(options["version_policy"]) if options["version_policy"] else None
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--version-policy") from None
    instances, parameters = options["instances"], None
    if options["tuned"] is not None:  # the settings a tune chose, in place of the batching and instance options
        batching, instances, parameters = tune.tuned_overrides(options["tuned"], refs, name, server, bool(batching or instances))
    done = []
    for ref in refs:
        try:
            result = package_model(
                ref, output, server=server, archive_format=options["archive_format"], native=options["native"], name=name,
                version=options["model_version"], batching=batching or None, instances=instances or None,
                inputs=options["inputs"] or None, version_policy=policy,
                warmup={"batch_size": options["warmup"]} if options["warmup"] else None,
                execution_env=options["execution_env"], bundle_env=options["bundle_env"],
                allow_pickle=True if options["allow_pickle"] else None, parameters=parameters, cache=options["cache"],
            )
        except MfnError as error:
            if not done:
                raise
            raise MfnError(f"{ref}: {error} (packaged before it: {', '.join(done)})") from None
        done.append(result.spec.name)
        summary = {"model": result.spec.name, "version": result.spec.version, "server": result.server, "path": str(result.path),
                   "warnings": list(result.warnings)}
        for warning in result.warnings:
            click.echo(f"warning: {warning}", err=True)
        click.echo(json.dumps(summary) if as_json else f"packaged {result.spec.name} v{result.spec.version} for {server} in {result.path}")


@cli.command()
@click.argument("path", type=click.Path(path_type=Path, exists=True))
@click.option("--target", type=click.Choice(DEPLOY_TARGETS), default="local", show_default=True, help="Where to deploy.")
@click.option("--public-key", type=click.Path(path_type=Path, exists=True, dir_okay=False), envvar="MFN_PUBLIC_KEY",
              help="Also check each package's signature with this public key (PEM; default $MFN_PUBLIC_KEY).")
@click.option("--no-verify", is_flag=True, help="Serve packages whose files differ from their digest manifests.")
@local_deploy_options
@kubernetes_options
@json_option
def deploy(path, target, public_key, no_verify, as_json, **options):
    """Serve the packaged models in PATH on a local server, or on Kubernetes through mfn's Helm chart."""
    refuse_other_scope(click.get_current_context(), target)
    if target == Target.KUBERNETES:
        deploying.to_kubernetes(path, not no_verify, public_key, scoped(options, "kubernetes"))
    else:
        deploying.to_local(path, as_json, not no_verify, public_key, scoped(options, "local"))


@cli.command()
@click.argument("path", type=click.Path(path_type=Path, exists=True))
@click.option("--key", "private_key", type=click.Path(path_type=Path, exists=True, dir_okay=False), required=True,
              help="Elliptic-curve private key (PEM) to sign with.")
@click.option("--password-env", help="Environment variable holding the key's password, if it has one.")
@json_option
def sign(path, private_key, password_env, as_json):
    """Sign every model package in PATH (OpenSSF model signing): a directory's signature goes inside it as
    mfn-signature.sig, an archive's beside it as <archive>.sig."""
    import os

    from mfn import signing

    password = os.environ.get(password_env) if password_env else None
    if password_env and password is None:
        raise click.UsageError(f"--password-env {password_env}: that environment variable is not set")
    written = signing.sign(path, private_key, password=password)
    if as_json:
        click.echo(json.dumps({"signatures": [str(item) for item in written]}))
    for item in written if not as_json else ():
        click.echo(f"signed: {item}")


@cli.command()
@click.argument("path", type=click.Path(path_type=Path, exists=True))
@click.option("--key", "public_key", type=click.Path(path_type=Path, exists=True, dir_okay=False), envvar="MFN_PUBLIC_KEY",
              help="Public key (PEM) to check signatures with (default $MFN_PUBLIC_KEY); without one, digests only.")
@json_option
def verify(path, public_key, as_json):
    """Check every model package in PATH against its digest manifest and, with --key, its signature."""
    from mfn import signing

    checked = signing.verify(path, public_key)
    if as_json:
        click.echo(json.dumps({"verified": [{"package": str(item.unit), "signature": item.signed} for item in checked]}))
        return
    for item in checked:
        click.echo(f"ok: {item.unit} ({'digests and signature' if item.signed else 'digests'})")


@cli.command()
@click.option("--kubernetes/--no-kubernetes", default=None,
              help="Also list Helm releases of the mfn chart (default: when a kubeconfig is there).")
@json_option
def status(kubernetes, as_json):
    """List local deployments (and Kubernetes releases), their endpoints and models."""
    from mfn.local import deployments
    from mfn.errors import MfnError

    from mfn.local.supervision import read_status

    from mfn.local.operations import versions_of

    records = deployments.status()
    supervision = {deployment.name: read_status(deployment) for deployment in records}
    versions = {deployment.name: versions_of(deployment) for deployment in records}
    releases, note = [], None
    from mfn.kubernetes import helm

    # Without a kubeconfig, Kubernetes is not in use here: say nothing unless asked.
    if kubernetes or (kubernetes is None and helm.kubeconfig_present()):
        try:
            releases = helm.releases()
        except MfnError as error:
            note = f"kubernetes: {str(error).splitlines()[0]}"
    if as_json:
        local_json = [{**d.to_json(), "supervision": supervision[d.name].to_json(), "versions": versions[d.name]}
                      for d in records]
        click.echo(json.dumps({"local": local_json, "kubernetes": [vars(r) for r in releases]}))
        return
    if not records:
        click.echo("no local deployments")
    for deployment in records:
        click.echo(deployments.describe(deployment, supervision[deployment.name], versions[deployment.name]))
    for release in releases:
        click.echo(f"{release.name} (kubernetes, namespace {release.namespace}, {release.status}): {release.chart}")
    if note:
        click.echo(note, err=True)


@cli.command()
@click.argument("name", required=False)
@click.option("--all", "everything", is_flag=True, help="Stop every local deployment (with --target kubernetes: uninstall "
              "every release of the mfn chart in --namespace).")
@click.option("--target", type=click.Choice(DEPLOY_TARGETS), default="local", show_default=True,
              help="Where the deployment runs.")
@click.option("--namespace", default="default", help="Kubernetes namespace of the release (default: the one named default).")
@json_option
def undeploy(name, everything, target, namespace, as_json):
    """Stop deployment NAME (or --all) and remove what it left behind; uninstall a Kubernetes release."""
    from mfn.local import deployments

    if bool(name) == everything:
        raise click.UsageError("give a deployment NAME or --all")
    if target == Target.KUBERNETES:
        from mfn.kubernetes import helm

        said = helm.undeploy_all(namespace) if everything else helm.undeploy(name, namespace)
        if as_json:
            click.echo(json.dumps({"namespace": namespace, "helm": said}))
        else:
            click.echo(said, nl=False)
        return
    stopped = deployments.undeploy_all() if everything else [deployments.undeploy(name)]
    if as_json:
        click.echo(json.dumps({"stopped": [deployment.name for deployment in stopped]}))
    for deployment in stopped if not as_json else ():
        click.echo(f"stopped {deployment.name}")


@cli.command()
@click.argument("name")
@click.option("--output", "-o", type=click.Path(path_type=Path), required=True, help="Directory for the files.")
@click.option("--interval", "interval_s", type=int, default=15, show_default=True, help="Scrape interval in seconds.")
def monitor(name, output, interval_s):
    """Write prometheus.yml, alert rules and a Grafana dashboard for deployment NAME, for your own Prometheus."""
    from mfn.local import state
    from mfn.monitoring.local import write_monitoring_files

    written = write_monitoring_files(state.get(name), output, interval_s)
    for path in written:
        click.echo(f"wrote {path}")


@cli.command()
@click.argument("name")
@json_option
def stats(name, as_json):
    """Summarise deployment NAME from its live metrics: requests, errors, batch size, latency, queue time."""
    from mfn.local import state
    from mfn.monitoring.stats import deployment_stats, format_stats

    serving = state.serving_model(name) if state.load(name) is None else []
    if serving:
        raise click.ClickException(f"{name!r} is a model, not a deployment: it is served by {', '.join(serving)}; "
                                   f"run `mfn stats {serving[0]}` (its figures are listed per model)")
    rows = deployment_stats(state.get(name))
    click.echo(json.dumps([row.to_json() for row in rows]) if as_json else format_stats(rows))


@cli.command()
@click.argument("ref")
@click.option("--format", "fmt", type=click.Choice(EXPORT_FORMATS), default="onnx", show_default=True,
              help="onnx or torchscript for a torch module; onnx or tflite for a SavedModel or Keras file.")
@click.option("--output", "-o", type=click.Path(path_type=Path), required=True, help="File to write.")
@module_inputs_option
@click.option("--opset", type=int, default=17, show_default=True, help="ONNX opset.")
@click.option("--tolerance", type=float, default=1e-4, show_default=True, help="Largest output difference accepted.")
def export(ref, fmt, output, inputs, opset, tolerance):  # noqa: PLR0913
    """Export REF and check the result on a sample against the original.

    REF is a torch module factory (path/to/file.py:factory; give --input) → ONNX or TorchScript, or a
    TensorFlow SavedModel directory or Keras file → TFLite or ONNX (inputs come from its signature).
    """
    from mfn.convert.export import export_model

    result = export_model(ref, inputs, output, fmt, opset, tolerance)
    opset_note = f", opset {result.opset}, dynamic batch axis" if result.opset else ""
    click.echo(f"exported {result.format} to {result.path}{opset_note}; max abs difference {result.max_abs_diff:.2g}")


@cli.command()
@click.argument("model")
@click.option("--sample", type=click.Path(path_type=Path, exists=True, dir_okay=False), required=True, help=".npz of input arrays, keyed by input name.")
@click.option("--output", "-o", type=click.Path(path_type=Path), required=True, help="File to write.")
@click.option("--max-abs-diff", type=float, default=0.05, show_default=True, help="Refuse when outputs move more than this.")
@click.option("--method", type=click.Choice(QUANTIZATIONS),
              help="TensorFlow models → TFLite: dynamic-range (int8 weights; default) or int8 (full integer, "
                   "calibrated on --sample).")
@json_option
def quantize(model, sample, output, max_abs_diff, method, as_json):  # noqa: PLR0913
    """Quantize MODEL and report size and output change on SAMPLE; refuse past --max-abs-diff.

    MODEL is an .onnx file (onnxruntime dynamic int8), a torch module factory path/to/file.py:factory
    (dynamic int8 Linear layers, saved as TorchScript), or a TensorFlow SavedModel directory or Keras
    file (converted to a quantized .tflite).
    """
    from mfn.convert.quantize import quantize as quantize_model

    report = quantize_model(model, sample, output, max_abs_diff, method)
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)
    if as_json:
        click.echo(json.dumps(report.to_json()))
        return
    top1 = "" if report.top1_agreement is None else f", top-1 agreement {report.top1_agreement:.1%}"
    click.echo(
        f"{report.method}: {report.size_before:,} → {report.size_after:,} bytes; max abs diff {report.max_abs_diff:.3g}, "
        f"mean abs diff {report.mean_abs_diff:.3g}{top1}; wrote {report.output}"
    )


@cli.command()
@click.argument("model")
@click.option("--data", "-d", required=True, help='Inputs as JSON ({"input": [[...]]} or KServe v2), or @file.json.')
@click.option("--protocol", type=click.Choice(PROTOCOLS), default="http", show_default=True,
              help="Call over HTTP or gRPC.")
@click.option("--version", "model_version", type=int, help="Model version (default: the server's choice).")
@click.option("--url", help="Server URL instead of a local deployment (http://host:port or grpc://host:port).")
@click.option("--deployment", help="Local deployment to use when several serve MODEL.")
@click.option("--server", type=click.Choice(SERVERS), default="triton", show_default=True, help="API spoken at --url.")
@click.option("--token", envvar="MFN_TOKEN", help="Inference key for --url (or $MFN_TOKEN); local deployments need none.")
@click.option("--timeout", "timeout_s", type=float, default=30.0, show_default=True, help="Seconds per call.")
@click.option("--tensors", type=click.Choice(TENSOR_ENCODINGS), default="binary", show_default=True,
              help="How tensors travel: raw bytes (KServe v2 binary tensor data) or KServe v2 JSON.")
@click.option("--stream", "streamed", is_flag=True, help="A streaming model: print each chunk as it arrives.")
@json_option
def invoke(model, data, protocol, model_version, url, deployment, server, token, timeout_s, tensors, streamed, as_json):  # noqa: PLR0913
    """Run one request against MODEL and print its outputs (--stream: each chunk as it comes)."""
    from mfn.cli.options import outputs_to_json
    from mfn.client import Client

    client = Client(url or deployment, protocol=protocol, server=server, timeout_s=timeout_s, binary=tensors == "binary",
                    token=token)
    with client:
        if streamed:
            _print_stream(client, model, invoke_data(data), model_version, as_json)
            return
        outputs = client.infer(model, invoke_data(data), version=model_version)
        endpoint = client.endpoint(model)
    from mfn.local.state import answering_version

    version = model_version or (answering_version(endpoint.deployment, model) if endpoint.deployment else None)
    answer = {"model": model, **({"version": version} if version else {}), "endpoint": str(endpoint),
              "outputs": outputs_to_json(outputs)}
    if as_json:
        click.echo(json.dumps(answer))
        return
    click.echo(f"{model} via {endpoint}")
    for name, value in answer["outputs"].items():
        click.echo(f"  {name} = {json.dumps(value)}")


def _print_stream(client, model, inputs, version, as_json):
    from mfn.cli.options import outputs_to_json

    for number, chunk in enumerate(client.stream(model, inputs, version=version), start=1):
        outputs = outputs_to_json(chunk)
        if as_json:
            click.echo(json.dumps({"model": model, "chunk": number, "outputs": outputs}))
        else:
            click.echo(f"[{number}] " + "  ".join(f"{name} = {json.dumps(value)}" for name, value in outputs.items()))


for _command in (*operate.COMMANDS, rollout, tune.tune):
    cli.add_command(_command)


if __name__ == "__main__":
    cli(prog_name="mfn")
