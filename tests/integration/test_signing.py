"""Digest manifests and OpenSSF model signatures: tampered packages are refused, naming the changed file."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

import mfn
from mfn.cli.main import cli
from mfn.local import deployments, state
from mfn.errors import MfnError
from tests.integration.conftest import TEXT_STATS

pytestmark = pytest.mark.integration


def key_pair(directory: Path, name: str = "key") -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    private, public = directory / f"{name}.pem", directory / f"{name}.pub.pem"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


def run(*args: object):
    return CliRunner().invoke(cli, [str(arg) for arg in args])


@pytest.fixture
def packages(tmp_path) -> dict[str, Path]:
    mfn.package(TEXT_STATS, tmp_path / "repo")
    mfn.package(TEXT_STATS, tmp_path / "store", server="torchserve")
    return {"triton": tmp_path / "repo", "torchserve": tmp_path / "store"}


def rewrite_member(archive: Path, member: str, data: bytes) -> None:
    with zipfile.ZipFile(archive) as source:
        items = [(item, data if item.filename == member else source.read(item)) for item in source.infolist()]
    with zipfile.ZipFile(archive, "w") as target:
        for item, content in items:
            target.writestr(item, content)


def test_fresh_packages_verify_and_a_changed_file_is_named(packages):
    for path in packages.values():
        result = run("verify", path)
        assert result.exit_code == 0 and "(digests)" in result.output, result.output
    handler = packages["triton"] / "text_stats" / "1" / "handler" / "handler.py"
    handler.write_text(handler.read_text() + "\nimport os  # planted\n")
    result = run("verify", packages["triton"])
    assert result.exit_code == 1 and "text_stats/1/handler/handler.py changed after packaging" in result.output
    (packages["triton"] / "text_stats" / "1" / "extra.py").write_text("x = 1\n")
    handler.unlink()
    result = run("verify", packages["triton"])
    assert result.exit_code == 1 and "text_stats/1/extra.py was added after packaging" in result.output
    archive = packages["torchserve"] / "text_stats.mar"
    rewrite_member(archive, "mfn_torchserve_adapter.py", b"import os\n")
    result = run("verify", packages["torchserve"])
    assert result.exit_code == 1 and "text_stats.mar/mfn_torchserve_adapter.py changed after packaging" in result.output


def test_signatures_catch_a_rewritten_manifest_and_a_wrong_key(packages, tmp_path):
    private, public = key_pair(tmp_path)
    _, other_public = key_pair(tmp_path, "other")
    for path in packages.values():
        assert run("verify", path, "--key", public).exit_code == 1  # not signed yet
        result = run("sign", path, "--key", private)
        assert result.exit_code == 0 and "signed:" in result.output, result.output
        result = run("verify", path, "--key", public, "--json")
        assert result.exit_code == 0, result.output
        assert [item["signature"] for item in json.loads(result.output)["verified"]] == [True]
        result = run("verify", path, "--key", other_public)
        assert result.exit_code == 1 and "signed with another key" in result.output
    assert (packages["triton"] / "text_stats" / "mfn-signature.sig").is_file()
    assert (packages["torchserve"] / "text_stats.mar.sig").is_file()
    # A careful attacker rewrites the manifest too: only the signature catches it.
    from mfn.manifest import write_directory_manifest

    config = packages["triton"] / "text_stats" / "config.pbtxt"
    config.write_text(config.read_text().replace("max_batch_size: 16", "max_batch_size: 15"))
    write_directory_manifest(packages["triton"] / "text_stats")
    assert run("verify", packages["triton"]).exit_code == 0
    result = run("verify", packages["triton"], "--key", public)
    assert result.exit_code == 1, result.output
    assert "changed after signing:" in result.output and "config.pbtxt" in result.output and "mfn-manifest.json" in result.output


def test_deploy_refuses_a_tampered_package_and_starts_nothing(packages):
    model_py = packages["triton"] / "text_stats" / "1" / "model.py"
    model_py.write_text(model_py.read_text() + "\n# planted\n")
    result = run("deploy", packages["triton"], "--name", "tampered")
    assert result.exit_code == 1 and "text_stats/1/model.py changed after packaging" in result.output
    assert "--no-verify" in result.output
    assert state.load("tampered") is None and not state.state_file("tampered").exists()


def test_deploy_checks_signatures_with_a_public_key_and_no_verify_overrides(packages, tmp_path):
    private, public = key_pair(tmp_path)
    assert run("sign", packages["triton"], "--key", private).exit_code == 0
    deployed = deployments.deploy(packages["triton"], name="signed", public_key=public, drain_timeout_s=0)
    try:
        assert deployed.models == ["text_stats"]
    finally:
        deployments.undeploy("signed")
    (packages["triton"] / "text_stats" / "1" / "handler" / "notes.txt").write_text("added\n")
    with pytest.raises(MfnError, match="text_stats/1/handler/notes.txt was added after packaging"):
        deployments.deploy(packages["triton"], name="signed", public_key=public)
    deployed = deployments.deploy(packages["triton"], name="unverified", verify=False, drain_timeout_s=0)
    deployments.undeploy("unverified")
    assert deployed.models == ["text_stats"]


def test_bytecode_caches_are_not_compared_verify_leaves_them_and_deploy_removes_them(packages, tmp_path):
    private, public = key_pair(tmp_path)
    assert run("sign", packages["triton"], "--key", private).exit_code == 0
    # What a server writes into a repository it serves, after the package was signed.
    compiled = packages["triton"] / "text_stats" / "1" / "__pycache__" / "model.cpython-311.pyc"
    compiled.parent.mkdir()
    compiled.write_bytes(b"planted")
    stray = packages["triton"] / "text_stats" / "1" / "handler" / "handler.pyc"
    stray.write_bytes(b"planted")
    result = run("verify", packages["triton"], "--key", public)
    assert result.exit_code == 0, result.output
    assert compiled.read_bytes() == b"planted" and stray.read_bytes() == b"planted"
    deployed = deployments.deploy(packages["triton"], name="cleaned", public_key=public, drain_timeout_s=0)
    try:
        assert deployed.models == ["text_stats"]
        assert not stray.exists()
        assert not compiled.exists() or compiled.read_bytes() != b"planted"  # gone, or compiled again by the server
    finally:
        deployments.undeploy("cleaned")
