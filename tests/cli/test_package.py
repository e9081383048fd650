"""`mfn package` through click's CliRunner, on real handler files, checked through the files it writes."""

import hashlib
import json
from importlib import metadata
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from mfn.cli.main import cli
from mfn.environment import wheel_name
from mfn.spec import ModelSpec
from tests.conftest import EXAMPLES, HANDLERS

MLP = f"{EXAMPLES / 'mlp' / 'handler.py'}:MLP"
TEXT_STATS = f"{EXAMPLES / 'text_stats' / 'handler.py'}:text_stats"
BAD = HANDLERS / "bad_outputs.py"


def run(*args):
    return CliRunner().invoke(cli, [str(arg) for arg in args], catch_exceptions=False)


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def commands(group=cli, path=()):
    """Every command under `group` with the words that name it (`rollout status`), groups included."""
    for name, command in group.commands.items():
        yield (*path, name), command
        if isinstance(command, click.Group):
            yield from commands(command, (*path, name))


def test_every_command_and_option_has_help_and_no_default_reads_default():
    for words, command in commands():
        result = run(*words, "--help")
        assert result.exit_code == 0, words
        assert command.help and command.help.split()[0] in result.output, words
        options = [param for param in command.get_params(click.Context(command)) if isinstance(param, click.Option)]
        assert [option.opts for option in options if not option.help] == [], words
        # A default that reads like a placeholder says nothing; an option whose default is the word "default" says
        # what that means instead.
        assert "[default: default]" not in " ".join(result.output.split()), words


def test_package_writes_a_self_contained_model(tmp_path):
    result = run("package", MLP, "--output", tmp_path / "repo")
    assert result.exit_code == 0, result.output
    model = tmp_path / "repo" / "mlp"
    assert sorted(tree_digest(model)) == [
        "1/artifacts/weights/weights.pt", "1/handler/handler.py", "1/handler/make_weights.py", f"1/mfn-wheel/{wheel_name()}",
        "1/mfn.json", "1/model.py",
        "1/requirements.txt", "config.pbtxt", "mfn-manifest.json",
    ]
    config = text_format.Parse((model / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert (config.name, config.backend, config.max_batch_size) == ("mlp", "python", 32)
    spec = ModelSpec.from_json((model / "1" / "mfn.json").read_text())
    assert spec.entrypoint.attribute == "MLP"
    assert pinned(model / "1" / "requirements.txt")["torch"] == f"torch=={metadata.version('torch').split('+')[0]}"
    assert (model / "1" / "artifacts/weights/weights.pt").read_bytes() == (EXAMPLES / "mlp" / "weights.pt").read_bytes()


def pinned(requirements: Path) -> dict[str, str]:
    """Pins by lower-case name; every line must be an exact pin."""
    lines = requirements.read_text().splitlines()
    assert lines and all("==" in line for line in lines), lines
    return {line.split("==")[0].lower(): line for line in lines}


def test_same_inputs_give_byte_identical_output(tmp_path):
    for out in ("a", "b"):
        assert run("package", MLP, "-o", tmp_path / out).exit_code == 0
        assert run("package", TEXT_STATS, "-o", tmp_path / out).exit_code == 0
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b")


def test_overrides_reach_the_config(tmp_path):
    result = run(
        "package", TEXT_STATS, "-o", tmp_path, "--name", "stats", "--version", "3", "--max-batch-size", "4",
        "--instances", "cpu:3", "--warmup", "2", "--version-policy", "all", "--json",
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"model": "stats", "version": 3, "server": "triton", "path": str(tmp_path / "stats"), "warnings": []}
    config = text_format.Parse((tmp_path / "stats" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert config.max_batch_size == 4
    assert config.instance_group[0].count == 3
    assert json.loads((tmp_path / "stats" / "3" / "mfn.json").read_text())["warmup"]["batch_size"] == 2  # run by the adapter
    assert config.version_policy.HasField("all")
    assert config.dynamic_batching.max_queue_delay_microseconds == 1000  # kept from the handler


def test_a_second_version_joins_the_first(tmp_path):
    versioned = f"{HANDLERS / 'versioned.py'}:Versioned"
    assert run("package", versioned, "-o", tmp_path, "--version", "1").exit_code == 0
    assert run("package", versioned, "-o", tmp_path, "--version", "2").exit_code == 0
    assert sorted(p.name for p in (tmp_path / "versioned").iterdir()) == ["1", "2", "config.pbtxt", "mfn-manifest.json"]
    assert "versioned v2" in (tmp_path / "versioned" / "config.pbtxt").read_text()


def test_a_version_with_other_tensors_is_refused(tmp_path):
    assert run("package", TEXT_STATS, "-o", tmp_path, "--name", "clash").exit_code == 0
    before = tree_digest(tmp_path)
    result = run("package", f"{HANDLERS / 'faulty.py'}:Faulty", "-o", tmp_path, "--name", "clash", "--version", "2")
    assert result.exit_code == 1
    assert "declares different inputs from v1" in result.output
    assert tree_digest(tmp_path) == before


BROKEN = [
    (f"{HANDLERS / 'import_error.py'}:Broken", ["importing", "No module named 'a_module_that_does_not_exist'", "Hint:"]),
    (f"{HANDLERS / 'no_predict.py'}:NoPredict", ["NoPredict has no predict method"]),
    (f"{BAD}:WrongName", ["predict returned 'z', which is not declared; predict did not return 'y'; declared outputs: 'y'"]),
    (f"{BAD}:WrongDtype", ["'y' has dtype FP64 (float64), declared FP32; cast with .astype(np.float32)"]),
    (f"{BAD}:WrongShape", ["'y' has shape [2, 2], declared [batch, 3]"]),
    (f"{BAD}:WrongRows", ["'y' has 1 rows for 2 input rows"]),
    (f"{BAD}:SetupFails", ["setup failed", "RuntimeError: weights are corrupt"]),
    (f"{BAD}:BadName", ["BadName.name: model name 'bad name' must start with a letter or digit"]),
    (f"{BAD}:BadSpec", ["BadSpec.instances: with more than one GPU group each group must list its gpus"]),
    (f"{BAD}:Missing", ["no attribute 'Missing'", "WrongDtype"]),
    (f"{HANDLERS / 'bad_declaration.py'}:Misspelt",
     ["Error: bad_declaration.py, line 12, Misspelt.inputs: Tensor 'x' dtype: unknown dtype 'FLOAT32x': did you mean "
      "'FP32'? use one of"]),
    ("no_such_file.py:X", ["no_such_file.py does not exist"]),
    ("not-a-reference", ["must look like"]),
]


@pytest.mark.parametrize(("ref", "fragments"), BROKEN, ids=[ref.rpartition("/")[2] for ref, _ in BROKEN])
@pytest.mark.parametrize("existing", [False, True], ids=["new-dir", "existing-dir"])
def test_broken_handlers_are_refused_and_the_output_is_untouched(tmp_path, ref, fragments, existing):
    output = tmp_path / "repo"
    if existing:
        assert run("package", TEXT_STATS, "-o", output).exit_code == 0
    before = tree_digest(tmp_path)
    result = run("package", ref, "-o", output)
    assert result.exit_code != 0
    for fragment in fragments:
        assert fragment in result.output
    assert result.output.startswith("Error: "), "user mistakes are reported as a click error, not a crash"
    assert tree_digest(tmp_path) == before
    assert output.exists() == existing


def test_missing_artifact_is_named(tmp_path):
    handler = tmp_path / "h.py"
    handler.write_text(
        "import mfn\n"
        "class H(mfn.Handler):\n"
        "    name = 'h'\n"
        "    inputs = [mfn.Tensor('x', 'FP32', [1])]\n"
        "    outputs = [mfn.Tensor('y', 'FP32', [1])]\n"
        "    artifacts = {'weights': 'model/weights.bin'}\n"
        "    def predict(self, inputs):\n"
        "        return {'y': inputs['x']}\n"
    )
    result = run("package", f"{handler}:H", "-o", tmp_path / "out")
    assert result.exit_code == 1
    assert "artifact 'weights'" in result.output and "model/weights.bin does not exist" in result.output
    assert not (tmp_path / "out").exists()


def test_status_without_a_kubeconfig_says_nothing_of_kubernetes_unless_asked(monkeypatch, tmp_path, empty_mfn_home):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    result = CliRunner().invoke(cli, ["status"])
    assert result.exit_code == 0
    assert result.output == "no local deployments\n"
    assert json.loads(CliRunner().invoke(cli, ["status", "--json"]).output)["kubernetes"] == []
    result = CliRunner().invoke(cli, ["status", "--kubernetes"])
    assert f"kubernetes: no kubeconfig at {tmp_path / 'none'}" in result.output and "--dry-run" not in result.output


def test_several_handlers_are_packaged_in_one_call(tmp_path):
    result = run("package", TEXT_STATS, f"{HANDLERS / 'versioned.py'}:Versioned", "-o", tmp_path, "--json")
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["model"] for line in result.output.splitlines()] == ["text_stats", "versioned"]
    assert (tmp_path / "text_stats" / "config.pbtxt").is_file() and (tmp_path / "versioned" / "config.pbtxt").is_file()
    refused = run("package", TEXT_STATS, f"{HANDLERS / 'versioned.py'}:Versioned", "-o", tmp_path / "other", "--name", "x")
    assert refused.exit_code == 2 and "--name names one model" in refused.output
    failed = run("package", TEXT_STATS, f"{HANDLERS / 'no_predict.py'}:NoPredict", "-o", tmp_path / "third")
    assert failed.exit_code == 1 and "(packaged before it: text_stats)" in failed.output
