"""Secret arguments kept off a server's command line, where every local user can read them (`ps`, /proc).

tritonserver 2.51 takes its API keys only as arguments. A small library preloaded into the server
(secret_args.c) adds them to its argv from a 0600 file before the server's main runs, then deletes the file:
the command line the kernel shows other users never holds them. The library is built once per source and
machine with the C compiler (`$CC`, else `cc`) and kept in a private directory.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

from mfn.errors import DeployError

SOURCE = Path(__file__).with_name("secret_args.c")
ARGS_FILE_VARIABLE = "MFN_SECRET_ARGS_FILE"
# The library finds and removes itself from LD_PRELOAD by this part of its file name.
LIBRARY_MARK = "libmfn_secret_args"


def preload_library(directory: Path) -> Path:
    """The preload library for this source and machine, built into `directory` (made 0700) if not there yet.

    Raises:
        DeployError: no C compiler, or the build failed (its output included).
    """
    source = SOURCE.read_bytes()
    tag = hashlib.sha256(source + platform.machine().encode()).hexdigest()[:16]
    library = directory / f"{LIBRARY_MARK}-{tag}.so"
    if library.is_file():
        return library
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        raise DeployError("tritonserver takes its API keys only on its command line, which every local user can read; "
                          "mfn keeps them off it with a small library built by a C compiler, and none was found: "
                          "install one (e.g. apt-get install gcc) or set $CC")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory) as scratch:
        built = Path(scratch) / library.name
        result = subprocess.run([compiler, "-shared", "-fPIC", "-O2", "-o", str(built), str(SOURCE), "-ldl"],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise DeployError(f"building {library.name} from {SOURCE} with {compiler} failed:\n{result.stderr.strip()}")
        built.chmod(0o700)
        os.replace(built, library)
    return library


def hide(env: dict[str, str], secret_args: list[str], args_file: Path, library: Path) -> dict[str, str]:
    """`env` for a server that receives `secret_args` through `args_file` (written 0600 now, deleted by the
    server as it starts) instead of its command line."""
    if any("\0" in arg for arg in secret_args):
        raise ValueError("a secret argument holds a NUL byte")
    args_file.unlink(missing_ok=True)
    descriptor = os.open(args_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(b"".join(arg.encode() + b"\0" for arg in secret_args))
    preloads = [str(library), *filter(None, env.get("LD_PRELOAD", "").split(":"))]
    return {**env, ARGS_FILE_VARIABLE: str(args_file), "LD_PRELOAD": ":".join(preloads)}
