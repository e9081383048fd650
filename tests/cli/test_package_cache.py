"""`mfn package --cache`: the declaration replaced, written into both targets' packages, mistakes named."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from mfn.cli.main import cli
from mfn.store import discover
from mfn.handlers.declarations import Cache
from tests.conftest import HANDLERS

COUNTED = f"{HANDLERS / 'counted.py'}:Counted"  # declares Cache(kind="local", size_mb=8)


@pytest.mark.parametrize("target", ["triton", "torchserve"])
def test_the_option_replaces_the_handlers_cache_on_both_targets(tmp_path, target):
    runner = CliRunner()
    result = runner.invoke(cli, ["package", COUNTED, "-o", str(tmp_path / "redis"), "--server", target,
                                 "--cache", "redis,url=redis://cache:6379/2,ttl_s=30,key_prefix=team-a"])
    assert result.exit_code == 0, result.output
    (spec,) = discover(tmp_path / "redis").specs()
    assert spec.cache == Cache(kind="redis", url="redis://cache:6379/2", ttl_s=30, key_prefix="team-a")
    result = runner.invoke(cli, ["package", COUNTED, "-o", str(tmp_path / "off"), "--server", target, "--cache", "off"])
    assert result.exit_code == 0, result.output
    (spec,) = discover(tmp_path / "off").specs()
    assert spec.cache is None
    if target == "triton":
        assert "response_cache" not in (tmp_path / "off" / "counted" / "config.pbtxt").read_text()
        # Triton's own cache for fixed per-row dims only: it keys answers without the shape.
        runner.invoke(cli, ["package", COUNTED, f"{COUNTED}Fixed", "-o", str(tmp_path / "local")])
        assert "response_cache" not in (tmp_path / "local" / "counted" / "config.pbtxt").read_text()
        assert "response_cache {\n  enable: true\n}" in (tmp_path / "local" / "counted_fixed" / "config.pbtxt").read_text()


def test_mistakes_are_named_and_nothing_is_written(tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["package", COUNTED, "-o", str(tmp_path / "out"), "--cache", "redis,url=redis://u:pw@cache:6379/0"])
    assert result.exit_code == 2
    assert "--cache" in result.output and "credentials must not be packaged" in result.output
    assert not (tmp_path / "out").exists()


def test_tune_trials_are_packaged_without_the_handlers_cache(tmp_path):
    from mfn.tuning.trials import package_trials
    from mfn.tuning.tuned import Settings

    model = package_trials(COUNTED, "triton", [Settings(max_batch_size=4), Settings(max_batch_size=8)], tmp_path)
    specs = discover(tmp_path).specs()
    assert model == "counted" and len(specs) == 2
    assert all(spec.cache is None for spec in specs)


def test_versions_that_disagree_on_tritons_cache_are_refused_since_they_share_one_config(tmp_path):
    runner = CliRunner()
    fixed = f"{COUNTED}Fixed"
    assert runner.invoke(cli, ["package", fixed, "-o", str(tmp_path), "--cache", "off"]).exit_code == 0
    result = runner.invoke(cli, ["package", fixed, "-o", str(tmp_path), "--version", "2"])
    assert result.exit_code == 1
    assert "counted_fixed v2 uses Triton's response cache and v1" in result.output and "does not" in result.output
    assert not (tmp_path / "counted_fixed" / "2").exists()
    # A Redis cache lives in mfn's adapter, per version: no conflict.
    result = runner.invoke(cli, ["package", fixed, "-o", str(tmp_path), "--version", "2", "--cache", "redis,url=redis://c:6379/0"])
    assert result.exit_code == 0, result.output
