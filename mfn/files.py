"""Files written whole or not at all: a reader (another process, `mfn status`, a server loading a model) never sees
half of one, and a failed write leaves the old file in place."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

PRIVATE = 0o600  # records, keys, mailboxes: the deploying user's alone
SHARED = 0o644  # model files a server running as another user must read


@contextmanager
def written_atomically(path: Path, mode: int = PRIVATE) -> Iterator[Path]:
    """A temporary file beside `path` for the block to fill, moved onto `path` (with `mode`) only if it succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(temporary)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)


def private_dir(path: Path) -> Path:
    """`path` as a directory only this user reads (0700), made where it is not there, with its parents."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.mkdir(exist_ok=True, mode=0o700)  # mkdir's mode covers only the last part
    return path


def write_text(path: Path, text: str, mode: int = PRIVATE) -> None:
    with written_atomically(path, mode) as temporary:
        temporary.write_text(text)


def write_json(path: Path, value: Any, mode: int = PRIVATE, indent: int | None = 2) -> None:
    """`value` as JSON (keys sorted, so records diff well)."""
    write_text(path, json.dumps(value, indent=indent, sort_keys=True), mode)
