"""Read the ModelSpec back out of a TorchServe archive in any of its three formats."""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path

from mfn.runtime.bundle import SPEC_FILE
from mfn.spec import ModelSpec

MANIFEST = "MAR-INF/MANIFEST.json"


def is_archive(path: Path) -> bool:
    return path.name.endswith((".mar", ".tar.gz")) and path.is_file() or (path / MANIFEST).is_file()


def archive_spec(path: Path) -> ModelSpec:
    """The spec packaged inside a .mar, .tar.gz or no-archive directory."""
    if path.is_dir():
        return ModelSpec.from_json((path / SPEC_FILE).read_text())
    if path.name.endswith(".tar.gz"):
        with tarfile.open(path, "r:gz") as archive:
            member = next(m for m in archive.getmembers() if m.name.endswith(f"/{SPEC_FILE}") and m.name.count("/") == 1)
            return ModelSpec.from_json(archive.extractfile(member).read().decode())  # type: ignore[union-attr]
    with zipfile.ZipFile(path) as archive:
        return ModelSpec.from_json(archive.read(SPEC_FILE).decode())


def store_archives(store: Path) -> list[Path]:
    """The archives directly inside a model store, in name order."""
    return sorted(child for child in store.iterdir() if not child.name.startswith(".") and is_archive(child))
