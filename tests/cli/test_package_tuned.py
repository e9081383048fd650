"""`mfn package --tuned`: exactly the settings `mfn tune` chose, on both targets, recorded in the package."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from mfn.cli.main import cli
from mfn.store import discover
from mfn.tuning.tuned import PROVENANCE_PARAMETER, Settings, Tuned, save
from tests.conftest import EXAMPLES

TEXT_STATS = f"{EXAMPLES / 'text_stats' / 'handler.py'}:text_stats"
CHOSEN = Settings(max_batch_size=16, max_queue_delay_us=2000, preferred_batch_sizes=(8, 16), instances=2)


@pytest.mark.parametrize("target", ["triton", "torchserve"])
def test_the_chosen_settings_are_packaged_and_recorded(tmp_path, target):
    tuned = save(Tuned(model="text_stats", server=target, latency_budget_ms=20, percentile=95, concurrency=16,
                       chosen=CHOSEN, baseline=Settings(max_batch_size=8)), tmp_path / "tuned.json")
    result = CliRunner().invoke(cli, ["package", TEXT_STATS, "--server", target, "-o", str(tmp_path / "out"),
                                      "--tuned", str(tuned)])
    assert result.exit_code == 0, result.output
    (spec,) = discover(tmp_path / "out").specs()
    assert (spec.batching.max_batch_size, spec.batching.max_queue_delay_us, spec.batching.preferred_batch_sizes) == (16, 2000, (8, 16))
    assert [(group.kind, group.count) for group in spec.instances] == [("cpu", 2)]
    assert spec.parameters[PROVENANCE_PARAMETER].startswith("batch 16, delay 2000 µs, preferred [8, 16], 2 instances")
    if target == "triton":
        config = (tmp_path / "out" / "text_stats" / "config.pbtxt").read_text()
        assert "max_batch_size: 16" in config and PROVENANCE_PARAMETER in config


def test_tuned_for_another_server_or_with_overrides_is_refused(tmp_path):
    tuned = save(Tuned(model="text_stats", server="triton", latency_budget_ms=20, percentile=95, concurrency=16,
                       chosen=CHOSEN, baseline=Settings(max_batch_size=8)), tmp_path / "tuned.json")
    other = CliRunner().invoke(cli, ["package", TEXT_STATS, "--server", "torchserve", "-o", str(tmp_path / "a"), "--tuned", str(tuned)])
    assert other.exit_code != 0 and "tuned on triton, not torchserve" in other.output
    both = CliRunner().invoke(cli, ["package", TEXT_STATS, "-o", str(tmp_path / "b"), "--tuned", str(tuned), "--max-batch-size", "4"])
    assert both.exit_code != 0 and "takes the place of --max-batch-size" in both.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
