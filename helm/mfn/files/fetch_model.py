"""Download the packaged model(s) from MODEL_URI into /models, streamed to disk (never held in memory).

https:// needs nothing but the standard library (a presigned S3 or GCS URL works). s3:// and gs:// need fsspec
with s3fs or gcsfs in models.fetchImage: nothing is installed at start, so a pod never runs pip.
"""

import os
import shutil
import sys
import tarfile
import urllib.request
from pathlib import Path

CHUNK = 1 << 20
uri = os.environ["MODEL_URI"]
target = Path("/models")
name = uri.rstrip("/").rsplit("/", 1)[-1]
# An archive goes straight into place; a .tar.gz is unpacked from /tmp (another volume: no rename across them).
download = target / name if name.endswith(".mar") else Path("/tmp") / name
if uri.startswith(("s3://", "gs://")):
    try:
        import fsspec
    except ImportError:
        scheme = uri.split(":", 1)[0]
        sys.exit(f"MODEL_URI {uri!r}: {scheme}:// needs fsspec and {dict(s3='s3fs', gs='gcsfs')[scheme]} in models.fetchImage "
                 "(an image built with them), or give a presigned https:// URL")
    with fsspec.open(uri, "rb") as source, open(download, "wb") as sink:
        shutil.copyfileobj(source, sink, CHUNK)
elif uri.startswith("https://"):
    with urllib.request.urlopen(uri, timeout=60) as source, open(download, "wb") as sink:
        shutil.copyfileobj(source, sink, CHUNK)
else:
    sys.exit(f"MODEL_URI {uri!r}: use https://, s3:// or gs://")
if not name.endswith(".mar"):
    with tarfile.open(download) as archive:
        # Bytecode caches a server wrote into the packed directory are never part of a package: left out, so that
        # none runs in place of its source (verify-models refuses any it finds).
        members = [member for member in archive if "__pycache__" not in member.name.split("/")
                   and not member.name.endswith((".pyc", ".pyo"))]
        archive.extractall(target, members=members, filter="data")
    download.unlink()
print(f"fetched {uri} into {target}: {sorted(p.name for p in target.iterdir())}")
