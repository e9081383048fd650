"""What a model file may run: pickles in a .pt2 are refused unless trusted, Keras loads in safe mode."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

import mfn
from mfn.cli.main import cli
from tests.model_files import exported_program

class Payload:
    """Writes a marker file when unpickled: what a hostile pickle would do instead."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "ran"))


def with_pickled_sample_inputs(program: Path, marker: Path) -> Path:
    """A copy of `program` whose sample inputs are a pickle with a code-running payload (torch.export.load
    falls back to full unpickling for them)."""
    import io

    import torch

    hostile = program.with_name("hostile.pt2")
    buffer = io.BytesIO()
    torch.save(Payload(marker), buffer)
    with zipfile.ZipFile(program) as source, zipfile.ZipFile(hostile, "w") as target:
        for item in source.infolist():
            data = buffer.getvalue() if "/sample_inputs/" in item.filename else source.read(item)
            target.writestr(item, data)
    return hostile


def test_a_pickle_bearing_pt2_is_refused_without_running_it(tmp_path):
    program, _ = exported_program(tmp_path)
    marker = tmp_path / "payload-ran"
    hostile = with_pickled_sample_inputs(program, marker)
    result = CliRunner().invoke(cli, ["package", str(hostile), "-o", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output
    assert "hostile.pt2: " in result.output and "/sample_inputs/" in result.output and "--allow-pickle" in result.output
    assert not marker.exists(), "the payload ran while mfn checked the file"
    assert not (tmp_path / "out").exists()


def test_allow_pickle_trusts_the_file_and_is_recorded_for_serving(tmp_path):
    program, _ = exported_program(tmp_path)
    marker = tmp_path / "payload-ran"
    hostile = with_pickled_sample_inputs(program, marker)
    # The flag is what let the payload run: the file is trusted, so torch.export.load unpickles in full.
    CliRunner().invoke(cli, ["package", str(hostile), "-o", str(tmp_path / "out"), "--allow-pickle"])
    assert marker.read_text() == "ran"
    result = CliRunner().invoke(cli, ["package", str(program), "-o", str(tmp_path / "trusted"), "--allow-pickle", "--json"])
    assert result.exit_code == 0, result.output
    spec = mfn.ModelSpec.from_json((tmp_path / "trusted" / "pt2_relu" / "1" / "mfn.json").read_text())
    assert spec.allow_pickle is True


def test_a_plain_pt2_packages_and_records_no_trust(tmp_path):
    program, _ = exported_program(tmp_path)
    result = mfn.package(str(program), tmp_path / "out")
    assert result.spec.allow_pickle is False


def test_the_served_handler_checks_again_at_load(tmp_path):
    """A package's .pt2 swapped after packaging is refused when the server loads it."""
    from mfn.errors import MfnError
    from mfn.handlers.base import Context
    from mfn.handlers.exported_program import ExportedProgramModel

    program, _ = exported_program(tmp_path)
    marker = tmp_path / "payload-ran"
    hostile = with_pickled_sample_inputs(program, marker)
    context = Context(model_dir=tmp_path, version=1, artifact_paths={"model": hostile})
    with pytest.raises(MfnError, match="hostile.pt2: .*sample_inputs.* holds pickled objects"):
        ExportedProgramModel().setup(context)
    assert not marker.exists()


def test_keras_lambda_layers_are_refused_in_safe_mode(tmp_path):
    import keras

    features = keras.Input(shape=(3,), name="features")
    model = keras.Model(features, keras.layers.Lambda(lambda x: x * 2, name="double")(features))
    path = tmp_path / "lambda.keras"
    model.save(path)
    result = CliRunner().invoke(cli, ["package", str(path), "-o", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output
    assert "lambda.keras holds Python code (a Lambda layer)" in result.output and "safe mode" in result.output
