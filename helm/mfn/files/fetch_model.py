"""Download the packaged model(s) from MODEL_URI into /models (https, s3 and gs; the latter through fsspec)."""

import os
import subprocess
import sys
import tarfile
import urllib.request
from pathlib import Path

uri = os.environ["MODEL_URI"]
target = Path("/models")
name = uri.rstrip("/").rsplit("/", 1)[-1]
download = Path("/tmp") / name
if uri.startswith(("s3://", "gs://")):
    extra = {"s3": "s3fs", "gs": "gcsfs"}[uri.split(":", 1)[0]]
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--target", "/tmp/fsspec", "fsspec", extra], check=True)
    sys.path.insert(0, "/tmp/fsspec")
    import fsspec

    with fsspec.open(uri, "rb") as source, open(download, "wb") as sink:
        sink.write(source.read())
elif uri.startswith("https://"):
    urllib.request.urlretrieve(uri, download)
else:
    sys.exit(f"MODEL_URI {uri!r}: use https://, s3:// or gs://")
if name.endswith(".mar"):
    download.replace(target / name)
else:
    with tarfile.open(download) as archive:
        archive.extractall(target, filter="data")
print(f"fetched {uri} into {target}: {sorted(p.name for p in target.iterdir())}")
