#!/bin/sh
# Build /env from the server image's own Python: a venv that also sees the image's packages (torch,
# ts, numpy, ...) through a .pth file, plus mfn and the handler's requirements. The server container
# puts /env/bin first on PATH: Triton's Python stub and TorchServe's workers then run this Python.
set -eu
base_site=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
python3 -m venv /env
env_site=$(/env/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$base_site" > "$env_site/server-image.pth"
/env/bin/python -m pip install --no-cache-dir --disable-pip-version-check "$@"
