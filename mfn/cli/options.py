"""Options and helpers shared by mfn's commands."""

from __future__ import annotations

import contextlib
import errno
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mfn.errors import InvokeError, MfnError
from mfn.kinds import SERVERS

if TYPE_CHECKING:
    import numpy as np

json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print machine-readable JSON (an error too: {\"error\": ...} on stdout, exit status 1 or 2).")
_DEBUG = "mfn.debug"
_JSON = "mfn.json"
_DEPRECATED_SERVER = "mfn.deprecated_server"
# What an MFN_HOME mfn may not read or write raises (ENOTDIR: a file stands where a directory should be).
_NO_ACCESS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR}


class JsonError(click.ClickException):
    """A command's error under --json: one JSON object on stdout, `{"error": message, "exit_code": N}`, so a program
    reading the command's JSON reads its failure the same way (stderr keeps only notices for people)."""

    def __init__(self, error: click.ClickException) -> None:
        super().__init__(error.format_message())
        self.exit_code = error.exit_code  # type: ignore[misc]  # click declares it on the class; this error keeps the one it wraps

    def show(self, file: Any = None) -> None:
        click.echo(json.dumps({"error": self.message, "exit_code": self.exit_code}))


class MfnCommand(click.Command):
    """A command with `--debug`, whose MfnError (or MFN_HOME refusing it access) becomes one clear line and exit
    status 1 (a traceback only with --debug): the one place the CLI turns mfn's errors into messages; with --json,
    every error, usage errors included, is one JSON object on stdout (JsonError). Options that apply to one deploy
    target (ScopedOption) get their own heading in --help."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params.append(click.Option(
            ["--debug"], is_flag=True, expose_value=False, help="Show tracebacks.",
            callback=lambda ctx, param, value: ctx.meta.__setitem__(_DEBUG, value) if value else None,
        ))

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        headings = {None: "Options", "local": "Local deploy options (--target local)",
                    "kubernetes": "Kubernetes options (--target kubernetes)"}
        for scope, heading in headings.items():
            rows = [record for param in self.get_params(ctx) if isinstance(param, click.Option)
                    and getattr(param, "scope", None) == scope and (record := param.get_help_record(ctx)) is not None]
            if rows:
                with formatter.section(heading):
                    formatter.write_dl(rows)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # Known before parsing, so that a usage error of a --json command is JSON too.
        ctx.meta[_JSON] = "--json" in args and any(param.name == "as_json" for param in self.params)
        try:
            return super().parse_args(ctx, args)
        except click.ClickException as error:
            raise JsonError(error) if ctx.meta[_JSON] else error from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return self._invoke(ctx)
        except click.ClickException as error:
            if ctx.meta.get(_JSON) and not isinstance(error, JsonError):
                raise JsonError(error) from None
            raise

    def _invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MfnError as error:
            if ctx.meta.get(_DEBUG):
                raise
            raise click.ClickException(str(error)) from None
        except OSError as error:
            message = None if ctx.meta.get(_DEBUG) else home_access_problem(error)
            if message is None:
                raise
            raise click.ClickException(message) from None


def home_access_problem(error: OSError) -> str | None:
    """What to tell the user when `error` is mfn being refused access to a path under MFN_HOME; None for any other error.

    Every command keeps its records and server work directories there: a read-only or misplaced MFN_HOME fails
    whichever command first touches it, so the one message lives here rather than in each command.
    """
    from mfn.local.state import mfn_home

    if error.errno not in _NO_ACCESS:
        return None
    home = mfn_home().absolute()
    for name in (error.filename, error.filename2):
        if isinstance(name, (str, bytes, os.PathLike)):
            path = Path(os.fsdecode(name)).absolute()
            if path == home or home in path.parents:
                return (f"mfn cannot use MFN_HOME {home} ({error.strerror}: {path}): make it a directory this user can "
                        "read and write, or set MFN_HOME to one")
    return None


class MfnGroup(click.Group):
    """mfn's command group: every command is an MfnCommand."""

    command_class = MfnCommand


class MfnSubGroup(MfnGroup):
    """A group of commands under `mfn` (`mfn rollout ...`), which also takes `--debug` before a command's name."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params.append(click.Option(
            ["--debug"], is_flag=True, expose_value=False, help="Show tracebacks.",
            callback=lambda ctx, param, value: ctx.meta.__setitem__(_DEBUG, value) if value else None,
        ))


def progress_shown(as_json: bool) -> contextlib.AbstractContextManager[None]:
    """Progress lines (mfn.progress) on stderr while a command runs; none with --json, whose stdout is one document
    and whose stderr stays quiet."""
    from mfn.progress import shown_by

    return shown_by(None if as_json else lambda message: click.echo(message, err=True))


def server_option(help: str):
    """`--server triton|torchserve`; `--target` is its spelling of earlier releases, still taken with a one-line notice
    on stderr ("target" names where a deployment runs: `mfn deploy --target local|kubernetes`)."""

    def remember_target(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
        if value is not None:
            click.echo(f"warning: --target {value} is deprecated here and goes in the next release: use --server {value} "
                       "(--target names where to deploy: mfn deploy --target local|kubernetes)", err=True)
            ctx.meta[_DEPRECATED_SERVER] = value

    def server_value(ctx: click.Context, param: click.Parameter, value: str) -> str:
        from click.core import ParameterSource

        old = ctx.meta.get(_DEPRECATED_SERVER)
        if old is None:
            return value
        if ctx.get_parameter_source("server") == ParameterSource.COMMANDLINE and value != old:
            raise click.UsageError(f"--server {value} and --target {old} disagree: give only --server")
        return old

    def decorate(command):
        command = click.option("--server", type=click.Choice(SERVERS), default="triton", show_default=True, help=help,
                               callback=server_value)(command)
        return click.option("--target", type=click.Choice(SERVERS), hidden=True, expose_value=False, is_eager=True,
                            callback=remember_target, help="Deprecated spelling of --server.")(command)
    return decorate


def _parse_instances(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[dict[str, Any]]:
    groups = []
    for value in values:
        kind, _, rest = value.partition(":")
        count, _, gpus = rest.partition(":")
        try:
            group: dict[str, Any] = {"kind": kind, "count": int(count or 1)}
            if gpus:
                group["gpus"] = [int(gpu) for gpu in gpus.split(",")]
        except ValueError:
            raise click.BadParameter(f"{value!r}: use KIND[:COUNT[:GPU,GPU]], e.g. cpu:2 or gpu:1:0,1") from None
        groups.append(group)
    return groups


instances_option = click.option(
    "--instances",
    multiple=True,
    callback=_parse_instances,
    help="Replace the instance groups: KIND[:COUNT[:GPU,...]] (repeatable), e.g. cpu:2 or gpu:1:0,1.",
)


def _parse_cache(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    from mfn.handlers.declarations import Cache

    if value is None:
        return None
    try:
        return Cache.parse(value) or "off"
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


cache_option = click.option(
    "--cache", callback=_parse_cache,
    help="Reuse answers to identical requests: local[,size_mb=N], redis[,url=redis://HOST:PORT/DB,ttl_s=N,key_prefix=P,"
         "timeout_ms=N], or off (replaces the handler's own cache declaration; see mfn.Cache).",
)
tuned_option = click.option(
    "--tuned", type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="Apply the batching and instance settings `mfn tune` chose, from the file it wrote (tuned.json by default); "
         "the package records that they came from it.",
)


class ScopedOption(click.Option):
    """An option that applies to one deploy target only; help lists it under that target's heading."""

    def __init__(self, *args: Any, scope: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.scope = scope


class Duration(click.ParamType):
    """A duration: seconds as a number, or with a unit: 500ms, 30s, 5m, 1h."""

    name = "duration"
    _UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        text = str(value).strip()
        unit = next((unit for unit in ("ms", "s", "m", "h") if text.endswith(unit)), "s")
        try:
            seconds = float(text.removesuffix(unit) if text.endswith(unit) else text) * self._UNITS[unit]
        except ValueError:
            self.fail(f"{value!r} is not a duration: use seconds or a number with ms, s, m or h, e.g. 30s or 5m", param, ctx)
        if seconds <= 0:
            self.fail(f"{value!r}: a duration must be above 0", param, ctx)
        return seconds


def _scoped_options(scope: str, options: list[tuple[tuple[str, ...], dict[str, Any]]]):
    def decorate(command):
        for declarations, settings in reversed(options):
            command = click.option(*declarations, cls=ScopedOption, scope=scope, **settings)(command)
        return command
    return decorate


local_deploy_options = _scoped_options("local", [
    (("--name",), {"help": "Deployment name (default: the repository directory's name)."}),
    (("--model", "models"), {"multiple": True, "help": "Load only this model (repeatable; default: all)."}),
    (("--foreground",), {"is_flag": True, "help": "Stay attached; Ctrl-C stops the server."}),
    (("--no-auth",), {"is_flag": True, "help": "Open inference (the admin APIs stay behind their key)."}),
    (("--prometheus",), {"is_flag": True, "help": "Also start a Prometheus scraping the server (stopped by undeploy)."}),
    (("--drain-timeout", "drain_timeout_s"), {"type": click.FloatRange(min=0), "default": 30.0, "show_default": True,
     "help": "Seconds undeploy lets requests in flight finish before the server is stopped."}),
    (("--max-request-mb",), {"type": click.FloatRange(min=0, min_open=True), "default": 64.0, "show_default": True,
     "help": "Largest request or response body in MiB (TorchServe; tritonserver 2.51 has no such limit); "
             "raised where a model's full batch needs more."}),
    (("--jvm-heap-mb",), {"type": click.IntRange(min=256), "help": "TorchServe's JVM heap (default: sized for the body limit)."}),
    (("--host",), {"default": "127.0.0.1", "show_default": True,
     "help": "Address to listen on (0.0.0.0: every interface; keep auth on). TorchServe's management stays on 127.0.0.1."}),
    (("--http-port",), {"type": click.IntRange(1, 65535), "help": "Fixed HTTP port (default: a free one)."}),
    (("--grpc-port",), {"type": click.IntRange(1, 65535), "help": "Fixed gRPC port (default: a free one)."}),
    (("--metrics-port",), {"type": click.IntRange(1, 65535), "help": "Fixed metrics port (default: a free one)."}),
    (("--load-timeout", "load_timeout_s"), {"type": click.FloatRange(min=1), "default": 300.0, "show_default": True,
     "help": "Seconds one model's load (its setup) may take; progress is shown every 10 s meanwhile."}),
    (("--idle-timeout", "idle_timeout_s"), {"type": Duration(),
     "help": "Stop the server after this long without requests (e.g. 5m); the next request wakes it and waits, "
             "over HTTP and gRPC (the HTTP and gRPC ports then belong to a front that relays to the server)."}),
    (("--proxy",), {"is_flag": True,
     "help": "Put the rollout proxy (nginx) in front from the start, so the HTTP and gRPC endpoints (--http-port, "
             "--grpc-port) stay the same through every later `mfn rollout`."}),
])
kubernetes_options = _scoped_options("kubernetes", [
    (("--release",), {"help": "Helm release name."}),
    (("--namespace",), {"default": "default", "help": "Kubernetes namespace (default: the one named default)."}),
    (("--model-uri",), {"help": "Where pods fetch the packaged models (https://, s3://, gs://)."}),
    (("--pvc",), {"help": "A PersistentVolumeClaim holding the packaged models instead."}),
    (("--set", "sets"), {"multiple": True, "help": "Extra chart value, KEY=VALUE (repeatable)."}),
    (("--dry-run",), {"is_flag": True, "help": "Print the rendered manifests, change nothing."}),
])


def scoped(options: dict[str, Any], scope: str) -> dict[str, Any]:
    """The values of the options of one scope (see ScopedOption), by parameter name."""
    command = click.get_current_context().command
    names = {param.name for param in command.params if isinstance(param, ScopedOption) and param.scope == scope}
    return {name: value for name, value in options.items() if name in names}


def refuse_other_scope(ctx: click.Context, target: str) -> None:
    """A usage error naming the options given that apply to another deploy target than `target`."""
    from click.core import ParameterSource

    given = ctx.get_parameter_source
    wrong = [param.opts[0] for param in ctx.command.params
             if isinstance(param, ScopedOption) and param.scope != target
             and given(param.name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)]
    if wrong:
        raise click.UsageError(f"{', '.join(wrong)} apply to --target {'kubernetes' if target == 'local' else 'local'}, "
                               f"not --target {target}")


def _parse_tensors(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[dict[str, Any]]:
    tensors = []
    for value in values:
        name, _, rest = value.partition(":")
        dtype, _, dims = rest.partition(":")
        try:
            tensors.append({"name": name, "dtype": dtype, "shape": [int(dim) for dim in dims.split(",") if dim]})
        except ValueError:
            raise click.BadParameter(f"{value!r}: use NAME:DTYPE:DIMS, e.g. features:FP32:4 or tokens:INT64:-1") from None
        if not name or not dtype:
            raise click.BadParameter(f"{value!r}: use NAME:DTYPE:DIMS, e.g. features:FP32:4")
    return tensors


tensors_option = click.option(
    "--input",
    "inputs",
    multiple=True,
    callback=_parse_tensors,
    help="Declare an input NAME:DTYPE:DIMS per row (repeatable); needed for TorchScript files.",
)
module_inputs_option = click.option(
    "--input",
    "inputs",
    multiple=True,
    callback=_parse_tensors,
    help="An input of the torch module, NAME:DTYPE:DIMS per row, in the order forward() takes them (repeatable); "
         "needed for a module factory (a TensorFlow model's inputs come from its signature).",
)


def invoke_data(data: str) -> dict[str, Any]:
    """Parse --data: inline JSON or @file, by input name or in the KServe v2 `inputs` list form.

    Raises:
        InvokeError: naming the input (or the file) and what to write instead.
    """
    from mfn.runtime.codec.client import parse_data
    from mfn.runtime.loop import RequestFailure

    if data.startswith("@"):
        try:
            text = Path(data[1:]).read_text()
        except (OSError, UnicodeDecodeError) as error:
            raise InvokeError(f"--data {data}: cannot read the file: {error}") from None
    else:
        text = data
    try:
        return parse_data(text)
    except RequestFailure as failure:
        raise InvokeError(f"--data: {failure.message}") from None


def outputs_to_json(outputs: dict[str, np.ndarray]) -> dict[str, Any]:
    """Arrays as nested lists; BYTES as text, or as hex where they are not UTF-8 text."""
    from mfn.runtime.codec.arrays import json_values
    from mfn.runtime.loop import RequestFailure

    shown = {}
    for name, array in outputs.items():
        try:
            shown[name] = json_values(array, f"output {name!r}", nested=True)
        except RequestFailure:  # binary BYTES, which JSON cannot carry as they are: hex prints anywhere
            import numpy as np

            shown[name] = np.vectorize(_text_or_hex, otypes=[object])(array).tolist()
    return shown


def _text_or_hex(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value.hex()
    return value
