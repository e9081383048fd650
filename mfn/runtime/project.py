"""The files a handler ships with: its directory, so it can import modules and read files beside it.

`mfn package path/to/handler.py:Class` ships the handler file's directory; `mfn package pkg.module:Class` ships
the top-level package `pkg` (paths are then relative to the directory `pkg` is imported from). A handler's
`include` globs narrow that down. Never shipped: the `exclude` globs and those of a `.mfnignore` file in that
directory (one glob a line, `#` comments), hidden names (.git, .env, ...), bytecode caches, virtual
environments, node_modules, mfn's own outputs (model repositories, model stores, .mar archives) and the declared
artifacts (they ship under artifacts/, read with ctx.artifact). Globs follow .gitignore's plain form: one
without '/' matches a name at any depth, one with '/' the path from the directory; a directory matched is
taken (or left out) whole.

Links are followed only inside the directory: one that leads outside is refused, as artifacts' are.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from mfn.errors import SpecError
from mfn.manifest import MANIFEST, is_server_written
from mfn.spec import Entrypoint, ModelSpec

IGNORE_FILE = ".mfnignore"
MIB = 1 << 20
_SKIPPED_NAMES = ("node_modules", "*.egg-info", "*.mar")
# Directories that are virtual environments or conda environments, whatever their name.
_ENVIRONMENT_MARKERS = ("pyvenv.cfg", "conda-meta")
# Directories mfn (or Triton) wrote: a model directory, and a repository or store holding some.
_PACKAGE_MARKERS = (MANIFEST, "config.pbtxt")


@dataclass(frozen=True)
class Project:
    """The directory a handler ships and the files taken from it (paths relative to it, sorted)."""

    root: Path
    files: tuple[str, ...]


def project_root(handler_file: Path, entrypoint: Entrypoint) -> Path:
    """The directory copied into the bundle's handler/: the handler file's own, or the one its package is in."""
    depth = len(entrypoint.package.split(".")) if entrypoint.package else 0
    return handler_file.parents[depth]


def collect(spec: ModelSpec, handler_file: Path, artifact_root: Path, skip: Sequence[Path] = ()) -> Project:
    """The files of the handler's directory that ship with it.

    Args:
        skip: Directories never shipped, whatever the globs say (the package's own output directory).

    Raises:
        SpecError: a link leads outside the directory, or the files total more than `spec.max_project_mb`.
    """
    root = project_root(handler_file, spec.entrypoint).resolve()
    entry = handler_file.resolve().relative_to(root).as_posix()
    left_out = {path.resolve() for path in skip}
    left_out |= {(artifact_root / declared).resolve() for declared in spec.artifacts.values()}
    walk = _Walk(root, spec.include, (*spec.exclude, *ignore_file_globs(root)), left_out)
    if spec.include is None and spec.entrypoint.package:  # the top-level package alone, the rest never walked
        top = spec.entrypoint.package.split(".")[0]
        sizes = dict(walk.files(root / top, f"{top}/", True))
    else:
        sizes = dict(walk.files(root, "", spec.include is None))
    # The handler and the packages holding it ship even where the globs leave them out.
    parts = entry.split("/")
    for required in [entry, *("/".join((*parts[:depth], "__init__.py")) for depth in range(1, len(parts)))]:
        if required not in sizes and (root / required).is_file():
            sizes[required] = (root / required).stat().st_size
    check_size(root, sizes, spec.max_project_mb)
    return Project(root, tuple(sorted(sizes)))


def ignore_file_globs(root: Path) -> list[str]:
    """The globs of `root/.mfnignore`: one a line; blank lines and `#` comments skipped, a leading '/' dropped."""
    ignore = root / IGNORE_FILE
    if not ignore.is_file():
        return []
    lines = (line.strip() for line in ignore.read_text().splitlines())
    return [line.lstrip("/") for line in lines if line and not line.startswith("#")]


def matches(globs: Sequence[str], relative: str) -> bool:
    """Whether a path relative to the project matches one of `globs` (see the module's docstring)."""
    name = relative.rpartition("/")[2]
    for glob in globs:
        pattern = glob.rstrip("/").removeprefix("**/")
        if fnmatchcase(relative if "/" in pattern else name, pattern):
            return True
    return False


class _Walk:
    """One walk of a project directory, links followed inside it once each."""

    def __init__(self, root: Path, include: Sequence[str] | None, exclude: Sequence[str], left_out: set[Path]):
        self.root, self.include, self.exclude, self.left_out = root, include, exclude, left_out
        self.visited = {root}

    def files(self, directory: Path, prefix: str, included: bool) -> Iterator[tuple[str, int]]:
        """(relative path, size) of the files shipped under `directory`."""
        try:
            with os.scandir(directory) as scan:
                entries = sorted(scan, key=lambda entry: entry.name)
        except OSError as error:
            raise SpecError(f"{prefix or '.'}: cannot read {directory} ({error.strerror}); make it readable, or exclude it "
                            "from what ships with the handler") from None
        for entry in entries:
            relative, path = f"{prefix}{entry.name}", Path(entry.path)
            if self._skipped(entry, relative):
                continue
            real = path.resolve()
            if entry.is_symlink() and not real.is_relative_to(self.root):
                raise SpecError(f"{relative}: {path} resolves to {real}, outside {self.root}; keep the handler's files "
                                "inside its directory (a copy, not a link to a file outside), or exclude it")
            if real in self.left_out:
                continue
            taken = included or (self.include is not None and matches(self.include, relative))
            if entry.is_dir():
                if real not in self.visited and not _is_environment_or_package(path):
                    self.visited.add(real)
                    yield from self.files(path, f"{relative}/", taken)
            elif entry.is_file() and taken:
                yield relative, real.stat().st_size

    def _skipped(self, entry: os.DirEntry, relative: str) -> bool:
        name = entry.name
        return (name.startswith(".") or is_server_written(relative) or any(fnmatchcase(name, glob) for glob in _SKIPPED_NAMES)
                or matches(self.exclude, relative))


def _is_environment_or_package(directory: Path) -> bool:
    if any((directory / marker).exists() for marker in (*_ENVIRONMENT_MARKERS, *_PACKAGE_MARKERS)):
        return True
    try:
        children = [child for child in directory.iterdir() if child.is_dir()]
    except OSError:
        return False
    return any((child / marker).is_file() for child in children for marker in _PACKAGE_MARKERS)


def check_size(root: Path, sizes: dict[str, int], max_mb: int) -> None:
    """Refuse a project over `max_mb`, naming its size, its biggest entries and how to leave them out.

    Raises:
        SpecError: the files total more than `max_mb` MiB.
    """
    total = sum(sizes.values())
    if total <= max_mb * MIB:
        return
    by_entry: dict[str, int] = {}
    for relative, size in sizes.items():
        top, slash, _ = relative.partition("/")
        by_entry[top + slash] = by_entry.get(top + slash, 0) + size
    biggest = sorted(by_entry.items(), key=lambda item: (-item[1], item[0]))[:5]
    listed = ", ".join(f"{name} ({human_size(size)})" for name, size in biggest)
    raise SpecError(
        f"{root} holds {human_size(total)} to ship with the handler, over max_project_mb={max_mb}; biggest: {listed}. "
        f"Leave out what serving does not need with exclude=[...] on the handler or a {IGNORE_FILE} file in {root} "
        "(one glob a line), name what it needs with include=[...], or raise max_project_mb"
    )


def human_size(size: int) -> str:
    """A byte count as B, KiB, MiB or GiB with one decimal."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", MIB), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"
