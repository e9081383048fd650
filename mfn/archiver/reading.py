"""Read what a TorchServe archive says about itself, in any of its three formats.

Archives built by other tools (no mfn.json) are read through their manifest and model-config.yaml,
so a model store may mix mfn's archives with hand-made ones.
"""

from __future__ import annotations

import json
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mfn.errors import MfnError
from mfn.manifest import SPEC_FILE

if TYPE_CHECKING:  # read where a spec is: finding a store's archives needs neither
    from mfn.handlers.declarations import VersionPolicy
    from mfn.spec import ModelSpec

MANIFEST = "MAR-INF/MANIFEST.json"


@dataclass(frozen=True)
class ArchiveInfo:
    """A model archive's name, version and the workers it asks for."""

    name: str
    version: int
    workers: int
    version_policy: VersionPolicy | None = None  # mfn's spec's; archives built by other tools have none


def is_archive(path: Path) -> bool:
    return path.name.endswith((".mar", ".tar.gz")) and path.is_file() or (path / MANIFEST).is_file()


def read_member(path: Path, member: str) -> bytes | None:
    """One file of a .mar, .tar.gz or no-archive directory, or None when it is absent."""
    if path.is_dir():
        return (path / member).read_bytes() if (path / member).is_file() else None
    if path.name.endswith(".tar.gz"):
        with tarfile.open(path, "r:gz") as archive:
            for candidate in archive.getmembers():
                if candidate.name.split("/", 1)[-1] == member:
                    return archive.extractfile(candidate).read()  # type: ignore[union-attr]
        return None
    with zipfile.ZipFile(path) as archive:
        return archive.read(member) if member in archive.namelist() else None


def archive_spec(path: Path) -> ModelSpec:
    """The ModelSpec inside an archive mfn built."""
    from mfn.spec import ModelSpec

    text = read_member(path, SPEC_FILE)
    if text is None:
        raise MfnError(f"{path} was not built by `mfn package` (no {SPEC_FILE} inside)")
    return ModelSpec.from_json(text.decode())


def archive_info(path: Path) -> ArchiveInfo:
    """Name and version from the manifest; workers from mfn's spec, else the archive's model-config.yaml."""
    import yaml

    manifest_text = read_member(path, MANIFEST)
    if manifest_text is None:
        raise MfnError(f"{path} has no {MANIFEST}: is it a TorchServe model archive?")
    model = json.loads(manifest_text)["model"]
    policy = None
    if read_member(path, SPEC_FILE) is not None:
        spec = archive_spec(path)
        workers, policy = spec.worker_count, spec.version_policy
    else:
        config_text = read_member(path, model.get("configFile") or "model-config.yaml")
        workers = int((yaml.safe_load(config_text) or {}).get("minWorkers", 1)) if config_text else 1
    return ArchiveInfo(name=model["modelName"], version=int(float(model["modelVersion"])), workers=workers,
                       version_policy=policy)


def store_archives(store: Path) -> list[Path]:
    """The archives directly inside a model store, in name order."""
    return sorted(child for child in store.iterdir() if not child.name.startswith(".") and is_archive(child))
