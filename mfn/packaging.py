"""`mfn package`: import a handler, check it on a sample batch, and write it for a server."""

from __future__ import annotations

import shutil
import tempfile
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from mfn.errors import HandlerError, MfnError, SpecError
from mfn.kinds import SERVERS, Server
from mfn.handlers.base import Arrays, Handler
from mfn.model_files import Source
from mfn.handlers.loading import handler_package, handler_source_file, load_handler
from mfn.manifest import write_directory_manifest
from mfn.runtime.bundle import check_confined, load_in_process
from mfn.runtime.project import Project, collect
from mfn.runtime.loop import RequestFailure, check_outputs
from mfn.handlers.samples import sample_arrays
from mfn.spec import Entrypoint, ModelSpec, declaration_warnings, spec_from_handler

SAMPLE_ROWS = 2
_MFN_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class PackageResult:
    """What `package` wrote."""

    spec: ModelSpec
    server: str
    path: Path
    warnings: tuple[str, ...] = ()

    @property
    def target(self) -> str:
        """Deprecated spelling of `server`."""
        warnings.warn("PackageResult.target is deprecated: read PackageResult.server", DeprecationWarning, stacklevel=2)
        return self.server


def package(  # noqa: PLR0913
    ref: str,
    output: Path | str,
    server: str = "triton",
    archive_format: str = "default",
    native: bool = False,
    bundle_env: bool = False,
    *,
    target: str | None = None,
    **overrides: object,
) -> PackageResult:
    """Package the handler `ref` into `output` for `server`.

    The handler is imported, its spec validated and its `setup` + `predict` run on a generated sample batch
    before anything is written; the output is built in a temporary directory and moved into place, so a
    failure leaves `output` as it was.

    Args:
        ref: `path/to/handler.py:Class`, `package.module:Class`, or a model file (e.g. `model.onnx`) that a
            built-in handler serves with no handler code.
        output: Model repository directory (Triton) or model store directory (TorchServe).
        server: Server to package for: "triton" or "torchserve".
        archive_format: TorchServe archive format: "default" (.mar), "no-archive" or "tgz".
        native: For a model file on Triton, write a config for Triton's native backend (e.g. onnxruntime_onnx)
            and the file itself, instead of mfn's Python-backend adapter.
        bundle_env: Also put the installed environment (mfn and the pinned requirements, see mfn.environment)
            into the package, for pods that reach no package index.
        target: Deprecated spelling of `server` (a DeprecationWarning; "target" names where a deployment runs,
            `mfn deploy --target local|kubernetes`).
        **overrides: Spec fields that replace the handler's declarations (name, version, batching, cache, ...;
            cache="off" removes the handler's cache).

    Raises:
        MfnError: naming what is wrong with the handler, its spec or the output directory.
    """
    if target is not None:
        warnings.warn("mfn.package(target=...) is deprecated: pass server=... (\"target\" names where a deployment "
                      "runs: `mfn deploy --target local|kubernetes`)", DeprecationWarning, stacklevel=2)
        server = target
    if server not in SERVERS:
        raise MfnError(f"unknown server {server!r}: choose one of {', '.join(SERVERS)}")
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise MfnError(f"output {output} is a file; give a directory")
    source = resolve(ref, **overrides)
    if native and (server != Server.TRITON or source.handler_file.parent != Path(__file__).parent / "handlers"):
        raise MfnError("--native applies to model files (e.g. model.onnx) packaged for --server triton")
    if native and bundle_env:
        raise MfnError("--bundle-env applies to mfn's adapters; a --native model runs on Triton's own backend, without Python")
    if native and source.spec.cache is not None:
        raise MfnError("a --native model runs on Triton's own backend, without mfn's adapter, which runs (or sizes) "
                       "the response cache: leave out --native, or --cache")
    if native:
        from mfn.model_repository.native import native_platform

        native_platform(source.artifact_root / source.spec.artifacts["model"])
    writer = _WRITERS[server]
    writer.check_output(source.spec, output)
    project = None if native else _project(source, output)
    check_handler(source.cls, source.spec, source.handler_file, source.artifact_root)
    from mfn.environment import lock_for
    from mfn.runtime.bundle import serving_requirements

    lock_warnings = () if native else lock_for(serving_requirements(source.spec)).warnings
    result = writer.write(source, output, _WriteOptions(archive_format, native, bundle_env, project))
    hidden = _hidden_versions(server, output, source.spec)
    # A model file's shapes come from the model itself: only a handler's own declarations are questioned.
    declared = () if source.handler_file.parent == Path(__file__).parent / "handlers" else declaration_warnings(source.spec)
    return replace(result, warnings=(*declared, *lock_warnings, *result.warnings, *hidden))


def _hidden_versions(server: str, output: Path, spec: ModelSpec) -> tuple[str, ...]:
    """A warning when `output` holds versions of the model that its version policy will not serve (both servers
    apply the policy; without one only the newest version is served)."""
    from mfn.handlers.declarations import VersionPolicy

    if server == Server.TRITON:
        versions = [int(child.name) for child in (output / spec.name).iterdir() if child.name.isdigit()]
    else:
        from mfn.archiver.reading import archive_info, store_archives

        versions = [info.version for info in map(archive_info, store_archives(output)) if info.name == spec.name]
    policy = spec.version_policy or VersionPolicy()
    served = policy.select(versions)
    hidden = sorted(set(versions) - set(served))
    if not hidden:
        return ()
    listed = ", ".join(f"v{version}" for version in hidden)
    return (f"{spec.name} {listed} stays in {output} but will not be served: the version policy serves "
            f"{', '.join(f'v{version}' for version in served)} (the newest only without one); package with "
            "--version-policy all (or latest:N, specific:1,2) to serve versions side by side",)


def resolve(ref: str, **overrides: object) -> Source:
    """A handler reference, or a model file served by the built-in handler for its format."""
    from mfn.model_files import builtin_source, is_model_file

    if is_model_file(ref):
        return builtin_source(Path(ref), **overrides)
    cls, handler_file, spec = build_spec(ref, **overrides)
    return Source(cls, handler_file, spec, handler_file.parent)


def build_spec(ref: str, **overrides: object) -> tuple[type[Handler], Path, ModelSpec]:
    """Import the handler a reference names and build its validated spec."""
    cls = load_handler(ref)
    handler_file = handler_source_file(cls)
    package = None if _is_builtin(handler_file) else handler_package(cls)
    entrypoint = Entrypoint(file=handler_file.name, attribute=ref.rpartition(":")[2], package=package)
    spec = spec_from_handler(cls, entrypoint, **overrides)
    for name, declared in spec.artifacts.items():
        if not (handler_file.parent / declared).exists():
            raise SpecError(
                f"artifact {name!r}: {handler_file.parent / declared} does not exist "
                f"(artifact paths are relative to {handler_file.name}); create it or fix the path"
            )
        # Before setup reads it: a link to a file outside the handler's directory is refused, not packaged.
        check_confined(handler_file.parent / declared, handler_file.parent, f"artifact {name!r} ({declared})")
    return cls, handler_file, spec


def check_handler(cls: type[Handler], spec: ModelSpec, handler_file: Path, artifact_root: Path | None = None) -> None:
    """Run setup, preprocess, predict and postprocess on a sample batch and check the outputs.

    Raises:
        HandlerError: with the handler's own traceback, or the mismatch between outputs and declaration.
    """
    with _handler_step(spec, "setup"):
        loaded = load_in_process(cls, spec, handler_file, artifact_root)
    try:
        batch = sample_arrays(spec.inputs, rows=min(SAMPLE_ROWS, spec.batching.max_batch_size))
        rows = next(iter(batch.values())).shape[0]
        if spec.streaming:
            _check_chunks(loaded, spec, batch, rows)  # preprocess and postprocess run in the streaming loop
            return
        with _handler_step(spec, "preprocess"):
            batch = loaded.handler.preprocess(batch)
        with _handler_step(spec, "predict"):
            outputs = loaded.handler.predict(batch)
        try:
            outputs = check_outputs(outputs, spec, rows=rows)
        except RequestFailure as failure:
            raise HandlerError(f"{spec.name}: on a sample batch, {failure.message}") from None
        with _handler_step(spec, "postprocess"):
            loaded.handler.postprocess(outputs)
    finally:
        with _handler_step(spec, "teardown"):
            loaded.close()


def _check_chunks(loaded, spec: ModelSpec, batch: Arrays, rows: int) -> None:
    """A streaming handler on the sample batch: every chunk it yields checked against the declared outputs."""
    from mfn.runtime.streaming import stream

    with _handler_step(spec, "predict"):
        events = [event for step in stream(loaded.loop, [batch]) for event in step]
    chunks = [event.outcome for event in events if event.outcome is not None]
    for chunk in chunks:
        if isinstance(chunk, RequestFailure):
            cause = chunk.__cause__
            detail = f"\n{''.join(traceback.format_exception(cause))}" if cause is not None else ""
            raise HandlerError(f"{spec.name}: on a sample batch of {rows} rows, {chunk.message}{detail}") from None
    if not chunks:
        raise HandlerError(f"{spec.name}: predict is a generator but yielded no chunk on a sample batch of {rows} rows; "
                           "yield at least one dict of outputs")


@contextmanager
def _handler_step(spec: ModelSpec, step: str) -> Iterator[None]:
    try:
        yield
    except MfnError:
        raise
    except Exception as error:
        raise HandlerError(f"{spec.name}: {step} failed on a sample batch:\n{_handler_traceback(error)}") from error


def _handler_traceback(error: BaseException) -> str:
    """The traceback from the handler's own first frame on (mfn's frames that called it left out), then the error."""
    frames = traceback.extract_tb(error.__traceback__)
    handlers = _MFN_DIR / "handlers"

    def mfn_internal(frame: traceback.FrameSummary) -> bool:
        path = Path(frame.filename).resolve()
        return path.is_relative_to(_MFN_DIR) and not path.is_relative_to(handlers)

    start = next((index for index, frame in enumerate(frames) if not mfn_internal(frame)), 0)
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(frames[start:]),
             *traceback.format_exception_only(type(error), error)]
    return "".join(lines).rstrip()


def _is_builtin(handler_file: Path) -> bool:
    """A handler that is part of mfn (a built-in for a model file): it ships alone, mfn itself is installed."""
    return handler_file.resolve().is_relative_to(_MFN_DIR)


def _project(source: Source, output: Path) -> Project | None:
    """The files of the handler's directory that ship with it; none for a built-in handler."""
    if _is_builtin(source.handler_file):
        return None
    return collect(source.spec, source.handler_file, source.artifact_root, skip=(output,))


@dataclass(frozen=True)
class _WriteOptions:
    archive_format: str = "default"
    native: bool = False
    bundle_env: bool = False
    project: Project | None = None


def _check_triton_output(spec: ModelSpec, repository: Path) -> None:
    from mfn.archiver.reading import store_archives
    from mfn.model_repository.layout import check_sibling_versions

    archives = store_archives(repository) if repository.is_dir() else []
    if archives:
        raise MfnError(f"{repository} is a TorchServe model store (it holds {_listed(path.name for path in archives)}), so "
                       "a Triton model cannot join it: package with --server torchserve, or give another --output")
    if (repository / spec.name).is_dir():
        check_sibling_versions(spec, repository / spec.name)


def _check_torchserve_output(spec: ModelSpec, store: Path) -> None:
    models = [child.name for child in sorted(store.iterdir()) if (child / "config.pbtxt").is_file()] if store.is_dir() else []
    if models:
        raise MfnError(f"{store} is a Triton model repository (it holds {_listed(models)}), so a TorchServe archive "
                       "cannot join it: package with --server triton, or give another --output")


def _listed(names) -> str:
    names = sorted(names)
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def _write_triton(source: Source, repository: Path, options: _WriteOptions) -> PackageResult:
    from mfn.model_repository.layout import install_model, stage_model
    from mfn.model_repository.native import stage_native_model

    spec = source.spec
    model_dir = repository / spec.name
    with _staging_area(repository) as staging:
        model_staging = staging / spec.name
        if options.native:
            stage_native_model(spec, source.artifact_root / spec.artifacts["model"], model_staging)
        else:
            stage_model(spec, source.handler_file, model_staging, source.artifact_root, options.bundle_env, options.project)
        install_model(model_staging, model_dir, spec.version)
    # Over the whole model directory: config.pbtxt and every version, old ones included.
    write_directory_manifest(model_dir)
    return PackageResult(spec=spec, server="triton", path=model_dir)


def _write_torchserve(source: Source, store: Path, options: _WriteOptions) -> PackageResult:
    from mfn.archiver.build import build_archive

    spec = source.spec
    with _staging_area(store) as staging:
        built = build_archive(spec, source.handler_file, staging, options.archive_format, source.artifact_root,
                              options.bundle_env, options.project)
        destination = store / built.name
        if destination.is_dir():
            destination.rename(staging / "replaced")
        built.replace(destination)
    from mfn.archiver.render import unexpressed

    return PackageResult(spec=spec, server="torchserve", path=destination, warnings=tuple(unexpressed(spec)))


@dataclass(frozen=True)
class _Writer:
    """How one server's package is written: a check of the output that runs before the handler does, and the writer."""

    check_output: Callable[[ModelSpec, Path], None]
    write: Callable[[Source, Path, _WriteOptions], PackageResult]


_WRITERS = {
    "triton": _Writer(_check_triton_output, _write_triton),
    "torchserve": _Writer(_check_torchserve_output, _write_torchserve),
}
assert tuple(_WRITERS) == SERVERS, "a writer for every server mfn knows"


@contextmanager
def _staging_area(output: Path) -> Iterator[Path]:
    """A temporary directory inside `output` (so moves are renames); `output` is removed again if it was new."""
    created = not output.exists()
    output.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".mfn-staging-", dir=output))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created:
            shutil.rmtree(output, ignore_errors=True)
        raise
    shutil.rmtree(staging, ignore_errors=True)
