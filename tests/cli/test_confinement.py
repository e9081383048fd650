"""Names are not paths and artifacts stay home: refusals name the value and the rule, and touch nothing."""

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from mfn.cli.main import cli
from mfn.local import state
from mfn.errors import MfnError
from mfn.spec import Entrypoint, ModelSpec
from tests.conftest import EXAMPLES

MLP = f"{EXAMPLES / 'mlp' / 'handler.py'}:MLP"
HANDLER = """
import mfn


class Leaky(mfn.Handler):
    name = "leaky"
    inputs = [mfn.Tensor("x", "FP32", [1])]
    outputs = [mfn.Tensor("y", "FP32", [1])]
    artifacts = {{"secret": {artifact!r}}}

    def predict(self, inputs):
        return {{"y": inputs["x"]}}
"""


def run(*args):
    return CliRunner().invoke(cli, [str(arg) for arg in args])


def snapshot(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*")}


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", ".hidden", "Upper", "under_score", "-dash", "x" * 64, ""])
def test_deploy_refuses_a_name_that_is_not_a_dns_label_before_touching_anything(tmp_path, name, empty_mfn_home):
    repository = tmp_path / "repo"
    assert run("package", MLP, "--output", repository).exit_code == 0
    before = snapshot(tmp_path)
    result = run("deploy", repository, "--name", name)
    assert result.exit_code == 1
    assert f"deployment name {name!r} is not valid: use 1 to 63 lower-case letters" in result.output
    assert "Traceback" not in result.output
    assert snapshot(tmp_path) == before
    assert not state.all_deployments()


def test_other_commands_refuse_a_path_as_a_deployment_name(tmp_path):
    for command in (["undeploy", "../../x"], ["logs", "../x"], ["stats", "a/b"]):
        result = run(*command)
        assert result.exit_code == 1 and "is not valid" in result.output, (command, result.output)


def test_a_default_name_is_made_valid_from_the_directory_name():
    assert state.name_from("My_Models.v2") == "my-models-v2"
    assert state.name_from("___") == "mfn"
    assert state.name_from("a" * 80) == "a" * 63


def test_kubernetes_release_and_namespace_names_are_checked(tmp_path):
    repository = tmp_path / "repo"
    assert run("package", MLP, "--output", repository).exit_code == 0
    result = run("deploy", repository, "--target", "kubernetes", "--release", "../x", "--dry-run")
    assert result.exit_code == 1 and "release name '../x' is not valid" in result.output


def test_work_dirs_outside_mfn_home_are_never_deleted(tmp_path):
    outside = tmp_path / "precious"
    outside.mkdir()
    with pytest.raises(MfnError, match="outside MFN_HOME"):
        state.inside_home(outside)
    assert outside.is_dir()


@pytest.mark.parametrize("artifact", ["../secret.txt", "sub/../../secret.txt"])
def test_an_artifact_path_that_leaves_the_handler_directory_is_refused(tmp_path, artifact):
    (tmp_path / "secret.txt").write_text("do not ship")
    handler_dir = tmp_path / "handler"
    handler_dir.mkdir()
    (handler_dir / "leaky.py").write_text(HANDLER.format(artifact=artifact))
    result = run("package", f"{handler_dir / 'leaky.py'}:Leaky", "--output", tmp_path / "out")
    assert result.exit_code == 1
    assert f"artifact 'secret': path {artifact!r} leaves the handler's directory" in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("target", ["triton", "torchserve"])
def test_an_artifact_that_links_outside_the_handler_directory_is_refused(tmp_path, target):
    (tmp_path / "secret.txt").write_text("do not ship")
    handler_dir = tmp_path / "handler"
    (handler_dir / "data").mkdir(parents=True)
    os.symlink(tmp_path / "secret.txt", handler_dir / "weights.bin")
    os.symlink(tmp_path / "secret.txt", handler_dir / "data" / "inner.bin")
    for artifact in ("weights.bin", "data"):
        (handler_dir / "leaky.py").write_text(HANDLER.format(artifact=artifact))
        result = run("package", f"{handler_dir / 'leaky.py'}:Leaky", "--output", tmp_path / "out", "--server", target)
        assert result.exit_code == 1, result.output
        assert "outside" in result.output and "a copy, not a link to a file outside" in result.output
        assert "secret.txt" in result.output
        assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("file", ["../evil.py", "sub/handler.py", "/abs/handler.py", "handler.txt", "..\\evil.py"])
def test_an_entrypoint_outside_the_bundle_is_refused_when_the_spec_is_read(file):
    with pytest.raises(ValueError, match="must be a plain .py file name"):
        Entrypoint(file=file, attribute="H")
    spec = ModelSpec(name="m", entrypoint=Entrypoint(file="h.py", attribute="H"),
                     inputs=[{"name": "x", "dtype": "FP32", "shape": [1]}], outputs=[{"name": "y", "dtype": "FP32", "shape": [1]}])
    tampered = spec.to_json().replace('"file": "h.py"', f'"file": {file!r}'.replace("'", '"'))
    with pytest.raises(ValueError):
        ModelSpec.from_json(tampered)
