"""Build a TorchServe archive with torch-model-archiver's Python API, then make it reproducible.

torch-model-archiver stamps the wall-clock time into the manifest, keeps file modification times
and walks directories in filesystem order. mfn passes it a manifest with a fixed creation time and
rewrites the finished archive with sorted entries and fixed timestamps and modes, so the same
inputs give a byte-identical archive.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mfn.archiver.render import ADAPTER_FILE, CONFIG_FILE, render_model_config
from mfn.errors import MfnError
from mfn.kinds import ARCHIVE_FORMATS
from mfn.manifest import MANIFEST, manifest_document, write_directory_manifest
from mfn.runtime.bundle import REQUIREMENTS_FILE, write_bundle
from mfn.runtime.project import Project
from mfn.spec import ModelSpec

_ADAPTER_SOURCE = Path(__file__).with_name("torchserve_adapter.py")
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def archive_name(spec: ModelSpec, archive_format: str) -> str:
    """`<name>.mar` for version 1; later versions carry theirs so several can share one model store."""
    stem = spec.name if spec.version == 1 else f"{spec.name}.v{spec.version}"
    return {"default": f"{stem}.mar", "tgz": f"{stem}.tar.gz", "no-archive": stem}[archive_format]


def build_time() -> float:
    """The creation time stamped into archives: SOURCE_DATE_EPOCH when set, else 1980-01-01 (zip's epoch)."""
    return float(os.environ.get("SOURCE_DATE_EPOCH", 315532800))


def build_archive(  # noqa: PLR0913
    spec: ModelSpec, handler_file: Path, staging: Path, archive_format: str, artifact_root: Path | None = None,
    bundle_env: bool = False, project: Project | None = None,
) -> Path:
    """Build the archive (adapter + bundle, see write_bundle) inside `staging` and return its path there."""
    from model_archiver.model_archiver_config import ModelArchiverConfig
    from model_archiver.model_packaging import package_model
    from model_archiver.model_packaging_utils import ModelExportUtils

    if archive_format not in ARCHIVE_FORMATS:
        raise MfnError(f"unknown archive format {archive_format!r}: choose one of {', '.join(ARCHIVE_FORMATS)}")
    sources, export = staging / "sources", staging / "export"
    bundle = sources / "bundle"
    write_bundle(spec, handler_file, bundle, artifact_root, bundle_env, project)
    shutil.copyfile(_ADAPTER_SOURCE, sources / ADAPTER_FILE)
    (sources / CONFIG_FILE).write_text(render_model_config(spec))
    export.mkdir()
    config = ModelArchiverConfig(
        model_name=spec.name,
        handler=str(sources / ADAPTER_FILE),
        version=str(spec.version),
        extra_files=str(bundle),
        export_path=str(export),
        archive_format=archive_format,
        force=True,
        requirements_file=str(bundle / REQUIREMENTS_FILE),
        config_file=str(sources / CONFIG_FILE),
    )
    manifest = _reproducible_manifest(ModelExportUtils.generate_manifest_json(config))
    with _archiver_temp_dir(staging / "archiver-tmp"):
        package_model(config, manifest=manifest)
    built = export / (spec.name if archive_format == "no-archive" else f"{spec.name}{'.tar.gz' if archive_format == 'tgz' else '.mar'}")
    final = staging / archive_name(spec, archive_format)
    {"default": _normalise_zip, "tgz": _normalise_tgz, "no-archive": _normalise_directory}[archive_format](built, final)
    return final


def _reproducible_manifest(manifest: str) -> str:
    document = json.loads(manifest)
    document["createdOn"] = time.strftime("%d/%m/%Y %H:%M:%S", time.gmtime(build_time()))
    return json.dumps(document, indent=2)


@contextmanager
def _archiver_temp_dir(directory: Path) -> Iterator[None]:
    """torch-model-archiver stages files in <tempdir>/<model name>; give it a private tempdir so
    concurrent builds of the same model cannot collide."""
    directory.mkdir()
    previous = tempfile.tempdir
    tempfile.tempdir = str(directory)
    try:
        yield
    finally:
        tempfile.tempdir = previous


def _normalise_zip(built: Path, final: Path) -> None:
    digests = {}
    with zipfile.ZipFile(built) as source, zipfile.ZipFile(final, "w", zipfile.ZIP_DEFLATED) as target:
        for name in sorted(source.namelist()):
            data = source.read(name)
            digests[name] = hashlib.sha256(data).hexdigest()
            target.writestr(_zip_info(name), data)
        # Last, so it lists every other member.
        target.writestr(_zip_info(MANIFEST), manifest_document(digests))


def _zip_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_ZIP_EPOCH)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    info.create_system = 3
    return info


def _normalise_tgz(built: Path, final: Path) -> None:
    mtime = int(build_time())
    with tarfile.open(built, "r:gz") as source:
        members = sorted((m for m in source.getmembers() if m.isfile()), key=lambda m: m.name)
        payload = io.BytesIO()
        digests = {}
        with tarfile.open(fileobj=payload, mode="w", format=tarfile.PAX_FORMAT) as target:
            for member in members:
                data = source.extractfile(member).read()  # type: ignore[union-attr]
                digests[member.name.split("/", 1)[-1]] = hashlib.sha256(data).hexdigest()
                _add_tar_member(target, member.name, data, mtime)
            top = members[0].name.split("/", 1)[0] if members and "/" in members[0].name else ""
            _add_tar_member(target, f"{top}/{MANIFEST}" if top else MANIFEST, manifest_document(digests), mtime)
    with open(final, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=mtime) as zipped:
        zipped.write(payload.getvalue())


def _add_tar_member(target: tarfile.TarFile, name: str, data: bytes, mtime: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), mtime, 0o644
    target.addfile(info, io.BytesIO(data))


def _normalise_directory(built: Path, final: Path) -> None:
    built.rename(final)
    for path in final.rglob("*"):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    write_directory_manifest(final)
    os.chmod(final / MANIFEST, 0o644)
