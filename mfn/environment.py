"""What a model package carries of the environment that packaged it, so a pod never installs mfn by name.

- `build_wheel`: mfn's own wheel, rebuilt from the running installation byte for byte the same every time
  (sorted entries, fixed time stamps and modes), so a pod installs exactly the mfn that packaged its model.
  The distribution is `mfn-serve`: `mfn` on the public package index is an unrelated project.
- `locked_requirements`: the handler's requirements and mfn's own, with everything they pull in, pinned to the
  versions installed where the package was built.
- `bundle_environment`: those installed files themselves, as a relocatable archive of site-packages, for
  pods without an index: the pod unpacks it into a fresh venv and runs no pip at all.
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import io
import json
import os
import sys
import sysconfig
import tarfile
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path, PurePosixPath

from mfn.errors import MfnError

DISTRIBUTION = "mfn-serve"
WHEEL_DIR = "mfn-wheel"
ENV_ARCHIVE = "mfn-env.tar.gz"
ENV_MANIFEST = "mfn-env.json"
SITE_DIR = "site"
# zip's epoch: the earliest time stamp a zip entry can hold.
FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
FIXED_TAR_TIME = 315532800


def canonical(name: str) -> str:
    """A distribution name as package indexes compare them (PEP 503)."""
    return "".join("-" if char in "_." else char for char in name.lower())


def _installed() -> metadata.Distribution:
    # The installed dist-info first: in a checkout, sys.path may also reach the editable install's egg-info,
    # and the wheel must not depend on the working directory.
    found = sorted(metadata.distributions(name=DISTRIBUTION), key=lambda dist: dist.read_text("METADATA") is None)
    if not found:
        raise MfnError(
            f"mfn is not installed as the {DISTRIBUTION} distribution here, so its wheel cannot go into the package: "
            "pip install it (pip install -e . in a checkout)"
        )
    return found[0]


def wheel_name() -> str:
    """The file name of the running mfn's wheel."""
    return f"{DISTRIBUTION.replace('-', '_')}-{_installed().version}-py3-none-any.whl"


def build_wheel(directory: Path) -> Path:
    """Write the running mfn as a pure-Python wheel into `directory`; the same installation gives the same bytes."""
    distribution = _installed()
    package_root = Path(__file__).resolve().parent
    dist_info = f"{DISTRIBUTION.replace('-', '_')}-{distribution.version}.dist-info"
    entries: dict[str, bytes] = {
        f"mfn/{relative}": path.read_bytes() for relative, path in _package_files(package_root)
    }
    # A checkout's editable install may be found through its egg-info, which calls the same file PKG-INFO.
    metadata_text = distribution.read_text("METADATA") or distribution.read_text("PKG-INFO")
    if not metadata_text:
        raise MfnError(f"the installed {DISTRIBUTION} has no metadata to put into its wheel: reinstall it")
    entries[f"{dist_info}/METADATA"] = metadata_text.encode()
    entries[f"{dist_info}/entry_points.txt"] = (distribution.read_text("entry_points.txt") or "").encode()
    entries[f"{dist_info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: mfn\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = "".join(f"{name},sha256={_record_digest(data)},{len(data)}\n" for name, data in sorted(entries.items()))
    entries[f"{dist_info}/RECORD"] = (record + f"{dist_info}/RECORD,,\n").encode()
    directory.mkdir(parents=True, exist_ok=True)
    wheel = directory / wheel_name()
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in sorted(entries.items()):
            info = zipfile.ZipInfo(name, FIXED_ZIP_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return wheel


def _package_files(root: Path) -> Iterator[tuple[str, Path]]:
    # The chart inside the package is a link in a checkout: follow it, as an installed wheel holds real files.
    for folder, folders, files in os.walk(root, followlinks=True):
        folders[:] = sorted(name for name in folders if name != "__pycache__")
        for name in sorted(files):
            if not name.endswith((".pyc", ".pyo")):
                path = Path(folder) / name
                yield path.relative_to(root).as_posix(), path


def _record_digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


@dataclass(frozen=True)
class Lock:
    """Pinned requirements (`name==version`, mfn itself excluded) and what could not be pinned."""

    pins: tuple[str, ...]
    warnings: tuple[str, ...] = ()
    distributions: tuple[str, ...] = ()


def locked_requirements(requirements: Iterable[str]) -> Lock:
    """`requirements` plus mfn's own, and all they depend on, pinned to the versions installed here.

    A requirement that is not installed here is kept as declared, with a warning: the pod resolves it.
    """
    from packaging.requirements import InvalidRequirement, Requirement

    pins: dict[str, str] = {}
    found: dict[str, str] = {}
    warnings: list[str] = []
    roots = [Requirement(DISTRIBUTION)]
    for text in requirements:
        try:
            roots.append(Requirement(text))
        except InvalidRequirement as error:
            reason = str(error).splitlines()[0]
            raise MfnError(f"requirements: {text!r} is not a requirement ({reason}); write it as pip does, e.g. 'torch>=2.1'") from None
    pending = [(requirement, True) for requirement in roots]
    while pending:
        requirement, declared = pending.pop()
        key = canonical(requirement.name)
        if key in found:
            continue
        try:
            distribution = metadata.distribution(requirement.name)
        except metadata.PackageNotFoundError:
            if declared:
                pins[key] = str(requirement)
                warnings.append(f"requirement {str(requirement)!r} is not installed here, so it is not pinned")
            continue
        found[key] = distribution.metadata["Name"]
        if declared and requirement.specifier and not requirement.specifier.contains(distribution.version, prereleases=True):
            warnings.append(f"requirement {str(requirement)!r} is not met here ({distribution.version} is installed); "
                            f"pinned to {distribution.version}")
        # Without a local label (+cpu, +cu121) the pin is met by any build of that version, as images carry their own.
        pins[key] = f"{distribution.metadata['Name']}=={distribution.version.split('+')[0]}"
        extras = requirement.extras or {""}
        for text in distribution.requires or ():
            dependency = Requirement(text)
            if dependency.marker and not any(dependency.marker.evaluate({"extra": extra}) for extra in extras):
                continue
            pending.append((dependency, False))
    mfn_key = canonical(DISTRIBUTION)
    return Lock(
        pins=tuple(pin for key, pin in sorted(pins.items()) if key != mfn_key),
        warnings=tuple(warnings),
        distributions=tuple(name for key, name in sorted(found.items()) if key != mfn_key),
    )


@functools.cache
def lock_for(requirements: tuple[str, ...]) -> Lock:
    """`locked_requirements`, computed once per process for the same requirements."""
    return locked_requirements(requirements)


def python_tag() -> dict[str, str]:
    """What an environment archive's compiled files need of the interpreter that unpacks it."""
    return {"python": f"{sys.implementation.name}{sys.version_info.major}.{sys.version_info.minor}",
            "platform": sysconfig.get_platform()}


def bundle_environment(lock: Lock, destination: Path) -> Path:
    """Write `destination`/ENV_ARCHIVE: every file the locked distributions installed into site-packages, and
    the running mfn (from its wheel), under `site/`, with a manifest of the interpreter they were built for.

    Scripts installed outside site-packages are left out: the servers import, they do not run console scripts.
    """
    destination.mkdir(parents=True, exist_ok=True)
    archive = destination / ENV_ARCHIVE
    members: dict[str, bytes | Path] = {}
    for name in lock.distributions:
        distribution = metadata.distribution(name)
        for file in distribution.files or ():
            relative = PurePosixPath(str(file))
            if ".." in relative.parts or "__pycache__" in relative.parts or relative.suffix == ".pyc":
                continue
            path = Path(str(distribution.locate_file(file)))
            if path.is_file():
                members[f"{SITE_DIR}/{relative}"] = path
    wheel = zipfile.ZipFile(io.BytesIO(build_wheel_bytes()))
    for name in wheel.namelist():
        members[f"{SITE_DIR}/{name}"] = wheel.read(name)
    manifest = {**python_tag(), "distributions": [*lock.pins]}
    members[ENV_MANIFEST] = json.dumps(manifest, indent=2, sort_keys=True).encode()
    # The gzip header's own time stamp is fixed too, so the same environment gives the same archive.
    with gzip.GzipFile(archive, "wb", compresslevel=6, mtime=0) as compressed, tarfile.open(fileobj=compressed, mode="w") as tar:
        for name in sorted(members):
            content = members[name]
            data = content if isinstance(content, bytes) else content.read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), FIXED_TAR_TIME, 0o755 if name.endswith(".so") else 0o644
            tar.addfile(info, io.BytesIO(data))
    return archive


@functools.cache
def build_wheel_bytes() -> bytes:
    """The running mfn's wheel, in memory (built once per process)."""
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        return build_wheel(Path(scratch)).read_bytes()
