"""Digest manifests of model packages: every file's SHA-256, written by `mfn package`, checked before serving.

A package unit is what a server loads as one model: a Triton model directory (config.pbtxt and every
version) or a TorchServe archive (.mar, .tar.gz or a no-archive directory). Its manifest, `mfn-manifest.json`,
lies inside it: a file in the Triton model directory, a member of the archive. Checking a unit recomputes
every file's digest and names the first file that changed, appeared or went missing.

The manifest alone catches corruption and careless edits; with a signature over the unit (mfn.signing), or
with the manifest's own digest recorded elsewhere (the Helm chart's values), it catches tampering too.

Standard library only: the chart runs this file as a script in its model-fetch image, where mfn is not
installed:

    python3 manifest.py ROOT UNIT=MANIFEST_SHA256 ...
"""

from __future__ import annotations

import hashlib
import json
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

MANIFEST = "mfn-manifest.json"
SPEC_FILE = "mfn.json"  # the spec in every mfn package, beside the handler's bundle (mfn.runtime.bundle)
SIGNATURE = "mfn-signature.sig"
FORMAT = 1
_CHUNK = 1 << 20


class ManifestError(Exception):
    """A unit whose files differ from its manifest, or that has none."""


def is_server_written(name: str) -> bool:
    """Whether a path inside a directory unit (or a project) is a bytecode cache: Python writes them beside the
    sources it imports (Triton's stub compiles model.py into the repository it serves), so they are never part of
    a package and never compared. Archives are not written into: every member of one is compared."""
    return "__pycache__" in name.split("/") or name.endswith((".pyc", ".pyo"))


def server_written(unit: Path) -> list[Path]:
    """The bytecode caches inside a directory unit: `__pycache__` folders and .pyc files outside them."""
    if not unit.is_dir():
        return []
    folders = sorted(unit.rglob("__pycache__"))
    files = [path for path in sorted(unit.rglob("*.py[co]")) if not any(path.is_relative_to(folder) for folder in folders)]
    return folders + files


def digest_stream(stream: IO[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in iter(lambda: stream.read(_CHUNK), b""):
        digest.update(chunk)
    return digest.hexdigest()


def unit_digests(unit: Path) -> Iterator[tuple[str, str]]:
    """(name, SHA-256) of every file in a unit but its manifest and signature (and a directory's bytecode caches),
    names relative to the unit."""
    if unit.is_dir():
        for path in sorted(unit.rglob("*")):
            name = path.relative_to(unit).as_posix()
            if path.is_file() and name not in (MANIFEST, SIGNATURE) and not is_server_written(name):
                with path.open("rb") as stream:
                    yield name, digest_stream(stream)
    elif unit.name.endswith(".tar.gz"):
        with tarfile.open(unit, "r:gz") as archive:
            # Names without the archive's top directory, as in the other formats.
            for member in sorted((m for m in archive.getmembers() if m.isfile()), key=lambda m: m.name):
                name = member.name.split("/", 1)[-1]
                if name != MANIFEST:
                    yield name, digest_stream(archive.extractfile(member))  # type: ignore[arg-type]
    else:
        with zipfile.ZipFile(unit) as archive:
            for name in sorted(archive.namelist()):
                if name != MANIFEST and not name.endswith("/"):
                    with archive.open(name) as stream:
                        yield name, digest_stream(stream)


def manifest_document(digests: dict[str, str]) -> bytes:
    """The manifest's bytes: the same files give the same bytes."""
    return (json.dumps({"format": FORMAT, "files": dict(sorted(digests.items()))}, indent=1, sort_keys=True) + "\n").encode()


def read_manifest(unit: Path) -> bytes:
    """The unit's manifest as stored.

    Raises:
        ManifestError: the unit has none.
    """
    try:
        if unit.is_dir():
            return (unit / MANIFEST).read_bytes()
        if unit.name.endswith(".tar.gz"):
            with tarfile.open(unit, "r:gz") as archive:
                member = next(m for m in archive.getmembers() if m.name.split("/", 1)[-1] == MANIFEST)
                return archive.extractfile(member).read()  # type: ignore[union-attr]
        with zipfile.ZipFile(unit) as archive:
            return archive.read(MANIFEST)
    except (FileNotFoundError, KeyError, StopIteration):
        raise ManifestError(f"{unit.name} has no {MANIFEST}: it was packaged by an mfn without manifests (or by another tool)") from None


def check(unit: Path, expected_sha256: str | None = None) -> None:
    """Compare every file of `unit` with its manifest (whose own digest must be `expected_sha256` when given).

    Raises:
        ManifestError: naming the first file that changed, was added or is missing.
    """
    stored = read_manifest(unit)
    if expected_sha256 and hashlib.sha256(stored).hexdigest() != expected_sha256:
        raise ManifestError(f"{unit.name}/{MANIFEST} changed: its SHA-256 is not the one recorded at deploy")
    recorded = json.loads(stored)["files"]
    if unit.is_dir():  # a manifest written before caches were left out may list them: they are not compared
        recorded = {name: digest for name, digest in recorded.items() if not is_server_written(name)}
    actual = dict(unit_digests(unit))
    for name in sorted(recorded.keys() | actual.keys()):
        if name not in actual:
            raise ManifestError(f"{unit.name}/{name} is missing: it was in the package when it was built")
        if name not in recorded:
            raise ManifestError(f"{unit.name}/{name} was added after packaging: it is not in {MANIFEST}")
        if recorded[name] != actual[name]:
            raise ManifestError(f"{unit.name}/{name} changed after packaging (SHA-256 {actual[name][:12]}…, "
                                f"packaged {recorded[name][:12]}…)")


def write_directory_manifest(unit: Path) -> None:
    """Write (atomically) the manifest of a directory unit."""
    partial = unit / f".{MANIFEST}.partial"
    partial.write_bytes(manifest_document(dict(unit_digests(unit))))
    partial.replace(unit / MANIFEST)


def main(argv: list[str]) -> int:
    """Check units under ROOT against manifests whose digests the deployer recorded; exit 1 naming the first problem.

    The pod sees the packages read-only, so a bytecode cache in one cannot be deleted before the server imports the
    source beside it, as `mfn deploy` does on its own machine: it is refused, naming the file."""
    if len(argv) < 2:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    root = Path(argv[0])
    for item in argv[1:]:
        name, _, expected = item.rpartition("=")
        try:
            check(root / name, expected)
            caches = server_written(root / name)
            if caches:
                raise ManifestError(f"{name}/{caches[0].relative_to(root / name)} is a bytecode cache, which could run in "
                                    "place of its source: remove it from the model source (mfn deploy removes them locally)")
        except ManifestError as error:
            print(f"mfn verify: {error}", file=sys.stderr)
            return 1
    print(f"mfn verify: {len(argv) - 1} model package(s) match their manifests")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
