"""`mfn deploy --target kubernetes`: chart values from the packaged models, then the user's helm."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from mfn.store import discover
from mfn.errors import DeployError, MfnError
from mfn.kubernetes.values import chart_values

HELM_TIMEOUT = "10m"


@dataclass(frozen=True)
class Release:
    """A helm release of the mfn chart."""

    name: str
    namespace: str
    status: str
    chart: str


def chart_path() -> Path:
    """The chart shipped inside the mfn package (the repository's helm/mfn)."""
    return Path(str(resources.files("mfn.kubernetes") / "chart")).resolve()


def find_helm() -> str:
    helm = shutil.which("helm")
    if helm is None:
        raise DeployError("helm was not found on PATH: install Helm 3 (https://helm.sh/docs/intro/install/)")
    return helm


def kubeconfig_present() -> bool:
    """Whether a kubeconfig is where helm and kubectl look: $KUBECONFIG's files, else ~/.kube/config."""
    paths = [Path(p) for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p] or [Path.home() / ".kube" / "config"]
    return any(path.is_file() for path in paths)


def check_kubeconfig(dry_run_hint: bool = False) -> None:
    """Fail early, with the fix, when no cluster is configured (helm's own error is less clear)."""
    if not kubeconfig_present():
        where = os.environ.get("KUBECONFIG") or "~/.kube/config"
        hint = " (or render the manifests only, with --dry-run)" if dry_run_hint else ""
        raise DeployError(f"no kubeconfig at {where}: point KUBECONFIG at your cluster's config{hint}")


def values_for(path: Path, release: str, model_uri: str | None, pvc: str | None) -> dict:
    """Chart values for the models packaged in `path`."""
    if not model_uri and not pvc:
        raise MfnError("say where the cluster gets the packaged models: --model-uri https://… / s3://… / gs://… or --pvc CLAIM")
    store = discover(path)
    return chart_values(store, store.specs(), release, model_uri, pvc)


def deploy(  # noqa: PLR0913
    path: Path,
    release: str,
    namespace: str = "default",
    model_uri: str | None = None,
    pvc: str | None = None,
    sets: tuple[str, ...] = (),
    dry_run: bool = False,
    verify: bool = True,
    public_key: Path | str | None = None,
) -> str:
    """Install or upgrade `release`, or with `dry_run` render its manifests; returns helm's output.

    The packages are checked here first (digests, and the signature with `public_key`; see mfn.signing),
    and the pods check what they fetch against the same manifests; `verify=False` skips both.
    """
    from mfn.local.state import check_name

    check_name(release, "release name")
    check_name(namespace, "namespace")
    if verify or public_key is not None:
        from mfn.signing import package_units, verify_units

        verify_units(package_units(path), public_key)
    values = values_for(path, release, model_uri, pvc)
    values["models"]["verify"] = verify
    helm = find_helm()
    if not dry_run:
        check_kubeconfig(dry_run_hint=True)
    with tempfile.TemporaryDirectory() as scratch:
        values_file = Path(scratch) / "values.json"
        values_file.write_text(json.dumps(values, indent=2, sort_keys=True))
        if dry_run:
            command = [helm, "template", release, str(chart_path()), "--namespace", namespace]
        else:
            command = [
                helm, "upgrade", "--install", release, str(chart_path()), "--namespace", namespace,
                "--create-namespace", "--wait", "--timeout", HELM_TIMEOUT,
            ]
        command += ["--values", str(values_file)]
        for assignment in sets:
            command += ["--set", assignment]
        output = _run(command)
        return redact_secrets(output) if dry_run else output


SECRET_PLACEHOLDER = "<generated at install>"


def redact_secrets(manifests: str) -> str:
    """Rendered manifests with every Secret's values replaced: a dry run's random keys are not the ones an
    install generates (nor kept), and keys do not belong in a terminal's scroll-back."""
    documents = manifests.split("\n---\n")
    return "\n---\n".join(_redact_data(doc) if "\nkind: Secret\n" in doc else doc for doc in documents)


def _redact_data(document: str) -> str:
    head, marker, data = document.partition("\ndata:\n")
    if not marker:
        return document
    lines = data.split("\n")
    for index, line in enumerate(lines):
        if not line.startswith("  "):
            break
        key, _, _ = line.partition(":")
        lines[index] = f"{key}: {SECRET_PLACEHOLDER}"
    return head + marker + "\n".join(lines)


def undeploy(release: str, namespace: str = "default") -> str:
    """Uninstall one release of the mfn chart."""
    from mfn.local.state import check_name

    check_name(release, "release name")
    check_name(namespace, "namespace")
    check_kubeconfig()
    return _run([find_helm(), "uninstall", release, "--namespace", namespace, "--wait"])


def undeploy_all(namespace: str = "default") -> str:
    """Uninstall every release of the mfn chart in `namespace` (other charts' releases are left alone)."""
    return "".join(undeploy(release.name, namespace) for release in releases() if release.namespace == namespace)


def releases() -> list[Release]:
    """Releases of the mfn chart in every namespace of the current cluster."""
    check_kubeconfig()
    listed = json.loads(_run([find_helm(), "list", "--all-namespaces", "--output", "json"]) or "[]")
    return [
        Release(item["name"], item["namespace"], item["status"], item["chart"])
        for item in listed
        if item["chart"].startswith("mfn-")
    ]


def _run(command: list[str]) -> str:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise DeployError(f"{' '.join(command[:3])} failed:\n{result.stderr.strip() or result.stdout.strip()}")
    return result.stdout
