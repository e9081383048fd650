"""`mfn tune` on the real server, short: two settings, two rounds of a second each; the report, the choice rule
on the measured figures, the plot, and the tuned file applied by `mfn package --tuned`."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from mfn.cli.main import cli
from mfn.store import discover
from mfn.tuning.run import own_settings, tune
from mfn.tuning.tuned import PROVENANCE_PARAMETER, Settings, load
from tests.conftest import EXAMPLES

TEXT_STATS = f"{EXAMPLES / 'text_stats' / 'handler.py'}:text_stats"


@pytest.mark.parametrize("target, concurrency", [("triton", [2, 4]), ("torchserve", 4)])
def test_a_short_tune_chooses_by_the_rule_and_its_file_packages_exactly_that(tmp_path, target, concurrency):
    own = own_settings(TEXT_STATS)
    other = Settings(max_batch_size=4, max_queue_delay_us=0)
    output = tmp_path / "tuned.json"
    tuned, choice = tune(TEXT_STATS, target, latency_budget_ms=2000, concurrency=concurrency, round_s=1.0, rounds=2,
                         grid=[own, other], output=output)
    assert tuned.concurrency == 4 and set(tuned.other_concurrencies) == ({"2"} if concurrency == [2, 4] else set())
    assert output.is_file() and output.with_suffix(".png").stat().st_size > 0
    verdicts = {verdict.settings: verdict for verdict in choice.verdicts}
    assert set(verdicts) == {own, other} and all(len(v.throughput_rps) == 3 for v in verdicts.values())
    # The rule, on the figures measured: no errors, within the budget, the higher median throughput.
    assert all(v.errors == 0 and v.latency_ms[0] <= 2000 for v in verdicts.values())
    best = max(verdicts.values(), key=lambda v: v.throughput_rps[0])
    assert tuned.chosen == best.settings and verdicts[best.settings].outcome == "chosen"
    loser = next(v for v in verdicts.values() if v is not best)
    assert loser.outcome in ("slower", "within the noise") and loser.why
    assert load(output).chosen == tuned.chosen
    packaged = CliRunner().invoke(cli, ["package", TEXT_STATS, "--server", target, "-o", str(tmp_path / "out"),
                                        "--tuned", str(output), "--json"])
    assert packaged.exit_code == 0, packaged.output
    (spec,) = discover(tmp_path / "out").specs()
    assert (spec.batching.max_batch_size, spec.batching.max_queue_delay_us) == (tuned.chosen.max_batch_size,
                                                                                tuned.chosen.max_queue_delay_us)
    assert sum(group.count for group in spec.instances) == tuned.chosen.instances
    assert PROVENANCE_PARAMETER in spec.parameters and json.loads(packaged.output)["model"] == "text_stats"
