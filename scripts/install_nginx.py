"""Put an nginx binary into a directory: Debian's own package, unpacked, so no service starts and no root is needed.

`apt-get download` fetches the distribution's `nginx` package (1.22 on Debian 12, with the HTTP/2, gRPC, mirror
and split_clients modules mfn's rollout proxy uses) and its njs module (`libnginx-mod-http-js`, for the guard in
front of Triton), and `dpkg -x` unpacks them; the binary is linked into the
directory. Installing the package with apt instead would also start a system nginx on port 80. Where apt is not
available, an nginx already on PATH is linked instead. Used by `make setup`.
"""

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


# nginx, and njs for the guard mfn's proxy runs in front of Triton (mfn/proxy/guard.js).
PACKAGES = ("nginx", "libnginx-mod-http-js")


def main(destination: Path, unpack_into: Path) -> None:
    target = destination / "nginx"
    if shutil.which("apt-get") and shutil.which("dpkg"):
        with tempfile.TemporaryDirectory() as scratch:
            subprocess.run(["apt-get", "download", "-q", *PACKAGES], cwd=scratch, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            staged = Path(scratch) / "root"
            for package in sorted(Path(scratch).glob("*.deb")):
                subprocess.run(["dpkg", "-x", str(package), str(staged)], check=True)
            shutil.rmtree(unpack_into, ignore_errors=True)
            unpack_into.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(staged), unpack_into)
        binary = unpack_into / "usr/sbin/nginx"
    elif shutil.which("nginx"):
        binary = Path(shutil.which("nginx"))
    else:
        sys.exit("nginx not found and apt-get is not available: install nginx 1.22 or newer with its njs module "
                 "(libnginx-mod-http-js) and run `make setup` again")
    destination.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    target.symlink_to(binary.resolve())
    print(subprocess.run([str(target), "-v"], capture_output=True, text=True, check=True).stderr.strip())


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
