"""Build /env for the server container from what the model package carries (see mfn.environment).

/env is a venv of the server image's own Python that also sees the image's packages (torch, ts, numpy, ...)
through a .pth file; the server container puts /env/bin first on PATH, so Triton's Python stub and
TorchServe's workers run it. mfn comes from the wheel inside the package that `mfn package` wrote, never from
an index by name, and every file taken from the package is checked against its SHA-256 first.

  venv:   pip installs that wheel and the pinned requirements (from the index pip is configured with).
  bundle: the package's environment archives are unpacked into the venv; no pip runs at all.

Runs with only the standard library: it is the first Python a pod runs.
"""

import argparse
import hashlib
import json
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

def read_member(source: Path, member: str) -> bytes:
    """A file from a package: a directory, a .mar (zip) or a .tar.gz TorchServe archive."""
    if source.is_dir():
        return (source / member).read_bytes()
    if source.name.endswith(".tar.gz"):
        with tarfile.open(source, "r:gz") as archive:
            for candidate in archive.getmembers():
                if candidate.isfile() and candidate.name.split("/", 1)[-1] == member:
                    return archive.extractfile(candidate).read()
        raise FileNotFoundError(f"{member} is not in {source}")
    with zipfile.ZipFile(source) as archive:
        return archive.read(member)


def checked(spec: str) -> tuple[str, bytes]:
    """FROM:MEMBER:SHA256 -> (member, its bytes), refusing a file whose digest differs."""
    source, member, digest = spec.rsplit(":", 2)
    data = read_member(Path(source), member)
    actual = hashlib.sha256(data).hexdigest()
    if actual != digest:
        sys.exit(f"build-env: {source}/{member} has SHA-256 {actual}, but the release expects {digest}: "
                 "the package changed after `mfn deploy` read it; repackage or redeploy")
    return member, data


def make_venv(env: Path, with_pip: bool) -> Path:
    base_site = sysconfig.get_paths()["purelib"]
    subprocess.run([sys.executable, "-m", "venv", *([] if with_pip else ["--without-pip"]), str(env)], check=True)
    env_site = Path(subprocess.run([str(env / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   check=True, capture_output=True, text=True).stdout.strip())
    (env_site / "server-image.pth").write_text(base_site + "\n")
    return env_site


def unpack(env_site: Path, scratch_dir: Path, name: str, data: bytes) -> None:
    scratch = scratch_dir / Path(name).name
    scratch.write_bytes(data)
    with tarfile.open(scratch, "r:gz") as archive:
        manifest = json.loads(archive.extractfile("mfn-env.json").read())
        here = f"{sys.implementation.name}{sys.version_info.major}.{sys.version_info.minor}"
        if manifest["python"] != here or manifest["platform"] != sysconfig.get_platform():
            sys.exit(f"build-env: the bundled environment was built for {manifest['python']} on {manifest['platform']}, "
                     f"but this image has {here} on {sysconfig.get_platform()}: package with a matching Python, "
                     "or use requirements.mode=venv")
        members = [member for member in archive.getmembers() if member.name.startswith("site/")]
        for member in members:
            member.name = member.name[len("site/"):]
        try:
            archive.extractall(env_site, members=members, filter="data")
        except TypeError:  # a Python without extraction filters; the archive's names were checked when it was written
            archive.extractall(env_site, members=members)
    scratch.unlink()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["venv", "bundle"], required=True)
    parser.add_argument("--env-dir", type=Path, required=True, help="Where the venv goes.")
    parser.add_argument("--scratch", type=Path, required=True, help="A writable directory for temporary files.")
    parser.add_argument("--wheel", required=True, help="FROM:MEMBER:SHA256 of mfn's wheel in the package.")
    parser.add_argument("--environment", action="append", default=[], help="FROM:MEMBER:SHA256 of an environment archive.")
    parser.add_argument("pip_args", nargs="*", help="Pinned requirements and extra pip arguments (venv mode).")
    args = parser.parse_args()
    wheel_member, wheel = checked(args.wheel)
    if args.mode == "bundle":
        env_site = make_venv(args.env_dir, with_pip=False)
        for spec in args.environment:
            unpack(env_site, args.scratch, *checked(spec))
        return
    make_venv(args.env_dir, with_pip=True)
    wheel_file = args.scratch / Path(wheel_member).name
    wheel_file.write_bytes(wheel)
    subprocess.run([str(args.env_dir / "bin" / "python"), "-m", "pip", "install", "--no-cache-dir", "--disable-pip-version-check",
                    str(wheel_file), *args.pip_args], check=True)


if __name__ == "__main__":
    main()
