"""Write one model version into a Triton model repository: DIR/<name>/config.pbtxt and DIR/<name>/<version>/."""

from __future__ import annotations

import shutil
from pathlib import Path

from mfn.errors import SpecError
from mfn.model_repository.render import render_config, uses_tritons_cache
from mfn.runtime.bundle import SPEC_FILE, write_bundle
from mfn.runtime.project import Project
from mfn.spec import ModelSpec

CONFIG_FILE = "config.pbtxt"
ADAPTER_FILE = "model.py"
_ADAPTER_SOURCE = Path(__file__).with_name("triton_model.py")


def stage_model(  # noqa: PLR0913
    spec: ModelSpec, handler_file: Path, staging: Path, artifact_root: Path | None = None, bundle_env: bool = False,
    project: Project | None = None,
) -> None:
    """Write config.pbtxt and the version directory (adapter + bundle, see write_bundle) under `staging`."""
    version_dir = staging / str(spec.version)
    write_bundle(spec, handler_file, version_dir, artifact_root, bundle_env, project)
    shutil.copyfile(_ADAPTER_SOURCE, version_dir / ADAPTER_FILE)
    (staging / CONFIG_FILE).write_text(render_config(spec))


def check_sibling_versions(spec: ModelSpec, model_dir: Path) -> None:
    """Refuse a version whose tensors differ from versions already in the repository.

    Triton serves every version of a model with one config.pbtxt, so their inputs, outputs and batch
    limit must agree.
    """
    for spec_file in sorted(model_dir.glob(f"*/{SPEC_FILE}")):
        other = ModelSpec.from_json(spec_file.read_text())
        if other.version == spec.version:
            continue
        for field in ("inputs", "outputs"):
            if getattr(other, field) != getattr(spec, field):
                raise SpecError(
                    f"{spec.name} v{spec.version} declares different {field} from v{other.version} in {model_dir}: "
                    "Triton serves all versions of a model with one config.pbtxt. Keep the tensors the same, "
                    "or package under a new name."
                )
        if uses_tritons_cache(other) != uses_tritons_cache(spec):
            raise SpecError(
                f"{spec.name} v{spec.version} {'uses' if uses_tritons_cache(spec) else 'does not use'} Triton's response "
                f"cache and v{other.version} in {model_dir} {'does' if uses_tritons_cache(other) else 'does not'}: it is "
                "switched on in the config.pbtxt all versions share. Declare the same local cache on both (or none), "
                "or package under a new name."
            )
        if other.batching.max_batch_size != spec.batching.max_batch_size:
            raise SpecError(
                f"{spec.name} v{spec.version} has max_batch_size {spec.batching.max_batch_size} but "
                f"v{other.version} in {model_dir} has {other.batching.max_batch_size}; they share one config.pbtxt"
            )


def install_model(staging: Path, model_dir: Path, version: int) -> None:
    """Move a staged model into the repository, replacing only that version and the config."""
    if not model_dir.exists():
        staging.rename(model_dir)
        return
    target = model_dir / str(version)
    if target.exists():
        target.rename(staging / f"replaced-{version}")
    (staging / str(version)).rename(target)
    (staging / CONFIG_FILE).replace(model_dir / CONFIG_FILE)
