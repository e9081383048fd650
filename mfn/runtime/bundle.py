"""The server-neutral bundle of one model version: handler source, artifacts, spec and requirements.

Both the Triton repository and the TorchServe archive hold this same layout, so one loader serves both:

    mfn.json            the ModelSpec
    handler/…           the user's handler source and the files of its directory (see mfn.runtime.project)
    artifacts/<name>/…  each declared artifact, under its declared name
    requirements.txt    the handler's pip requirements
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from mfn.errors import SpecError
from mfn.manifest import SPEC_FILE
from mfn.handlers.base import Arrays, Context, Handler
from mfn.handlers.loading import handler_class, import_entrypoint
from mfn.handlers.metrics import HandlerMetrics, InMemoryMetrics, MetricFactory
from mfn.runtime.loop import BatchLoop, Outcome
from mfn.runtime.metrics import LoopMetrics
from mfn.spec import ModelSpec

if TYPE_CHECKING:
    from mfn.runtime.cache import CachedAnswers
    from mfn.runtime.project import Project

HANDLER_DIR = "handler"
ARTIFACTS_DIR = "artifacts"
REQUIREMENTS_FILE = "requirements.txt"
# A cached model's handler source and artifacts, digested at packaging (part of its cache keys).
CONTENT_DIGEST_FILE = "content.sha256"


def bundled_artifact_path(name: str, declared: str) -> PurePosixPath:
    """Where a declared artifact lives inside a bundle, relative to the bundle root."""
    return PurePosixPath(ARTIFACTS_DIR, name, PurePosixPath(declared).name)


def write_bundle(  # noqa: PLR0913
    spec: ModelSpec, handler_file: Path, destination: Path, artifact_root: Path | None = None, bundle_env: bool = False,
    project: Project | None = None,
) -> None:
    """Copy the handler source (with `project`, the files of its directory) and its artifacts and write the spec
    into `destination`, with what a pod needs to run it: mfn's own wheel, the requirements pinned to this
    environment's versions, and with `bundle_env` the installed environment itself (see mfn.environment).

    Artifact paths are relative to `artifact_root` (default: the handler file's directory; built-in
    handlers serving a model file use the model file's directory). Files are copied by content only,
    and the spec is written with sorted keys, so the same inputs give byte-identical bundles.
    """
    (destination / HANDLER_DIR).mkdir(parents=True)
    if project is None:
        shutil.copyfile(handler_file, destination / HANDLER_DIR / spec.entrypoint.file)
    for relative in project.files if project else ():
        (destination / HANDLER_DIR / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(project.root / relative, destination / HANDLER_DIR / relative)  # type: ignore[union-attr]  # project is set
    root = artifact_root or handler_file.parent
    for name, declared in sorted(spec.artifacts.items()):
        source = root / declared
        check_confined(source, root, f"artifact {name!r} ({declared})")
        target = destination / bundled_artifact_path(name, declared)
        target.parent.mkdir(parents=True)
        if source.is_dir():
            shutil.copytree(source, target, copy_function=shutil.copyfile, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copyfile(source, target)
    (destination / SPEC_FILE).write_text(spec.to_json())
    if spec.cache is not None:
        (destination / CONTENT_DIGEST_FILE).write_text(content_digest(destination) + "\n")
    from mfn import environment

    lock = environment.lock_for(serving_requirements(spec))
    (destination / REQUIREMENTS_FILE).write_text("".join(f"{pin}\n" for pin in lock.pins))
    (destination / environment.WHEEL_DIR).mkdir()
    (destination / environment.WHEEL_DIR / environment.wheel_name()).write_bytes(environment.build_wheel_bytes())
    if bundle_env:
        environment.bundle_environment(lock, destination)


def content_digest(bundle_dir: Path) -> str:
    """SHA-256 over the bundle's handler source and artifacts: each file's path within the bundle and its digest."""
    import hashlib

    from mfn.manifest import unit_digests

    digest = hashlib.sha256()
    for folder in (HANDLER_DIR, ARTIFACTS_DIR):
        if (bundle_dir / folder).is_dir():
            for name, file_digest in unit_digests(bundle_dir / folder):
                if "__pycache__" not in name.split("/"):
                    digest.update(f"{folder}/{name}\0{file_digest}\n".encode())
    return digest.hexdigest()


def serving_requirements(spec: ModelSpec) -> tuple[str, ...]:
    """What the serving environment needs beyond mfn: the handler's requirements, and redis-py for a Redis cache."""
    requirements = tuple(spec.requirements)
    names = {re.split(r"[\s<>=!~\[;@]", requirement, maxsplit=1)[0].lower() for requirement in requirements}
    if spec.cache is not None and spec.cache.kind == "redis" and "redis" not in names:
        requirements += ("redis",)
    return requirements


def check_confined(source: Path, root: Path, what: str) -> None:
    """Refuse `source` if it, or anything inside it, resolves (symlinks followed) outside `root`.

    Raises:
        SpecError: naming the artifact and where it leads, before anything is copied.
    """
    base = root.resolve()
    if not source.exists():
        raise SpecError(f"{what}: {source} does not exist")
    paths = [source]
    if source.is_dir():
        paths += [Path(folder) / entry for folder, folders, files in os.walk(source, followlinks=True) for entry in (*folders, *files)]
    for path in paths:
        if not path.resolve().is_relative_to(base):
            raise SpecError(f"{what}: {path} resolves to {path.resolve()}, outside {base}; keep artifacts inside the "
                                "handler's directory (a copy, not a link to a file outside)")


@dataclass
class LoadedModel:
    """A handler instance that has run `setup`, with its spec and batch loop."""

    spec: ModelSpec
    handler: Handler
    loop: BatchLoop
    # Seconds spent loading it, by phase (handler_import_s, setup_s, warm_up_s; see mfn.runtime.cold_start).
    timings: dict[str, float] = field(default_factory=dict)
    # The response cache in front of the loop, where the adapter runs one (see mfn.runtime.cache).
    cache: CachedAnswers | None = None

    @property
    def answer(self) -> Callable[[Sequence[Arrays | Exception]], list[Outcome]]:
        """What answers a batch of decoded requests: the cache's run when there is one, else the loop's. Adapters
        take it once at load, so a batch costs no more than a call to the loop did before there was a cache."""
        return (self.cache or self.loop).run

    def warm_up(self) -> None:
        """Run the spec's warm-up requests (sample rows of the declared shapes) through the batch loop.

        Both adapters call this before their model reports ready (Triton's own `model_warmup` is not used: its
        requests would count in mfn's metrics and its samples differ). Warm-up is not traffic: mfn's request,
        batch and latency metrics do not count it.

        Raises:
            RuntimeError: with the handler's reason when a warm-up request fails.
        """
        warmup = self.spec.warmup
        if warmup is None:
            return
        from mfn.handlers.samples import sample_arrays
        from mfn.runtime.loop import RequestFailure

        started = time.perf_counter()
        batch = sample_arrays(self.spec.inputs, warmup.batch_size)
        recording, self.loop.metrics = self.loop.metrics, LoopMetrics(
            InMemoryMetrics(), self.spec.name, self.spec.version, self.spec.streaming)
        try:
            for _ in range(warmup.count):
                for outcome in self._warm_up_outcomes(batch):
                    if isinstance(outcome, RequestFailure):
                        raise RuntimeError(f"{self.spec.name}: warm-up request failed: {outcome.message}")
        finally:
            self.loop.metrics = recording
            self.timings["warm_up_s"] = time.perf_counter() - started

    def _warm_up_outcomes(self, batch):
        if not self.spec.streaming:
            return self.loop.run([batch])
        from mfn.runtime.streaming import stream

        return [event.outcome for step in stream(self.loop, [batch]) for event in step]

    def close(self) -> None:
        """Run the handler's teardown."""
        self.handler.teardown()


def load_bundle(
    bundle_dir: Path, device: str = "cpu", instance: str = "local", metrics: MetricFactory | None = None,
    server_caches_locally: bool = False,
) -> LoadedModel:
    """Import the bundled handler, build its context and run `setup`, as a server adapter does at load time.

    Args:
        metrics: The server's metric factory; mfn's built-in metrics and the handler's own go through it.
        server_caches_locally: The server answers a local cache's hits itself (Triton's response cache), so
            the adapter runs none for kind='local'.
    """
    spec = ModelSpec.from_json((bundle_dir / SPEC_FILE).read_text())
    if device == "cpu" and any(group.kind == "gpu" for group in spec.instances):
        # Triton refuses KIND_GPU without a GPU before this runs; TorchServe would run the worker on the CPU.
        raise RuntimeError(
            f"{spec.name} v{spec.version} declares GPU instance groups, but the server gave it no GPU (none visible, "
            "or TorchServe's number_of_gpu is 0): package with CPU instances (--instances cpu:N) to serve it here"
        )
    started = time.perf_counter()
    module = import_entrypoint(bundle_dir / HANDLER_DIR, spec.entrypoint.file, spec.entrypoint.package)
    handler_import_s = time.perf_counter() - started
    cls = handler_class(module, spec.entrypoint.attribute, f"{spec.name} v{spec.version}")
    artifacts = {name: bundle_dir / bundled_artifact_path(name, declared) for name, declared in spec.artifacts.items()}
    factory = metrics or InMemoryMetrics()
    loaded = start_handler(cls, spec, Context(
        model_dir=bundle_dir,
        version=spec.version,
        device=device,
        instance=instance,
        logger=logging.getLogger(f"mfn.handler.{spec.name}"),
        artifact_paths=artifacts,
        metrics=HandlerMetrics(factory, spec.name, spec.version),
        allow_pickle=spec.allow_pickle,
    ), LoopMetrics(factory, spec.name, spec.version, spec.streaming))
    loaded.timings["handler_import_s"] = handler_import_s
    if spec.cache is not None:
        from mfn.runtime.cache import adapter_cache

        digest_file = bundle_dir / CONTENT_DIGEST_FILE
        content = digest_file.read_text().strip() if digest_file.is_file() else content_digest(bundle_dir)
        loaded.cache = adapter_cache(spec, loaded.loop, factory, server_caches_locally, dict(os.environ), content)
    return loaded


def load_in_process(
    cls: type[Handler], spec: ModelSpec, handler_file: Path, artifact_root: Path | None = None
) -> LoadedModel:
    """Instantiate a handler straight from its source tree, artifacts at their declared paths."""
    root = artifact_root or handler_file.parent
    artifacts = {name: (root / declared).resolve() for name, declared in spec.artifacts.items()}
    factory = InMemoryMetrics()
    return start_handler(cls, spec, Context(
        model_dir=handler_file.parent,
        version=spec.version,
        logger=logging.getLogger(f"mfn.handler.{spec.name}"),
        artifact_paths=artifacts,
        metrics=HandlerMetrics(factory, spec.name, spec.version),
        allow_pickle=spec.allow_pickle,
    ), LoopMetrics(factory, spec.name, spec.version, spec.streaming))


def start_handler(cls: type[Handler], spec: ModelSpec, ctx: Context, metrics: LoopMetrics | None = None) -> LoadedModel:
    """Create the handler, run its setup and wrap it in a batch loop."""
    handler = cls()
    started = time.perf_counter()
    handler.setup(ctx)
    setup_s = time.perf_counter() - started
    return LoadedModel(spec=spec, handler=handler, loop=BatchLoop(handler, spec, metrics), timings={"setup_s": setup_s})
