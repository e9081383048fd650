"""`mfn tune`'s choice rule on given figures, and the tuned file that `mfn package --tuned` applies."""

from __future__ import annotations

import json

import pytest

from mfn.errors import MfnError
from mfn.tuning.choice import Round, Trial, choose
from mfn.tuning.trials import default_grid
from mfn.tuning.tuned import PROVENANCE_PARAMETER, Settings, Tuned, load, overrides, save

OWN = Settings(max_batch_size=8)
BIG = Settings(max_batch_size=32, max_queue_delay_us=500)
DELAY = Settings(max_batch_size=32, max_queue_delay_us=5000)
FLAKY = Settings(max_batch_size=64)


def trial(settings: Settings, rps: list[float], p95: list[float], errors: int = 0) -> Trial:
    return Trial(settings, [Round(r, {95: p}, errors if i == 0 else 0) for i, (r, p) in enumerate(zip(rps, p95))])


def test_the_fastest_within_the_budget_wins_and_every_other_trial_says_why():
    choice = choose([trial(OWN, [1000, 1010, 990], [4, 4, 4]), trial(BIG, [2000, 2100, 1950], [8, 9, 8]),
                     trial(DELAY, [2600, 2500, 2700], [14, 15, 14]), trial(FLAKY, [3000, 3000, 3000], [5, 5, 5], errors=3)],
                    budget_ms=10, percentile=95, baseline=OWN)
    assert choice.chosen == BIG
    outcomes = {v.settings: v.outcome for v in choice.verdicts}
    assert outcomes == {BIG: "chosen", DELAY: "over budget", FLAKY: "errors", OWN: "slower"}
    assert "p95 14.00 ms is above the budget of 10 ms" in next(v.why for v in choice.verdicts if v.settings == DELAY)
    assert choice.gain == "2.00x the throughput of the handler's own settings"


def test_trials_whose_spreads_overlap_are_not_told_apart():
    choice = choose([trial(OWN, [1000, 1200, 900], [4, 4, 4]), trial(BIG, [1100, 1300, 950], [5, 5, 5])],
                    budget_ms=10, percentile=95, baseline=OWN)
    assert choice.chosen == BIG
    assert {v.settings: v.outcome for v in choice.verdicts}[OWN] == "within the noise"
    assert choice.gain == "no measurable gain over the handler's own settings: their throughputs overlap"


def test_a_single_round_says_the_noise_was_not_measured():
    choice = choose([trial(OWN, [1000], [4]), trial(BIG, [2000], [5])], budget_ms=10, percentile=95, baseline=OWN)
    assert choice.gain == "2.00x the throughput of the handler's own settings (one round each: the spread, and so the noise, was not measured)"


def test_no_setting_within_the_budget_is_said_with_the_closest_figure():
    choice = choose([trial(OWN, [1000], [12]), trial(BIG, [2000], [30])], budget_ms=10, percentile=95, baseline=OWN)
    assert choice.chosen is None
    assert choice.gain == "no setting met the p95 budget of 10 ms without errors; the lowest p95 measured was 12.00 ms"


def tuned(model: str = "mlp", target: str = "triton") -> Tuned:
    return Tuned(model=model, server=target, latency_budget_ms=10, percentile=95, concurrency=8, chosen=BIG,
                 baseline=OWN, trials=[{"settings": "..."}])


def test_a_tuned_file_round_trips_and_becomes_package_overrides(tmp_path):
    path = save(tuned(), tmp_path / "tuned.json")
    loaded = load(path)
    assert loaded.chosen == BIG and loaded.baseline == OWN
    applied = overrides(loaded, path, "mlp", "triton")
    assert applied["batching"] == {"max_batch_size": 32, "max_queue_delay_us": 500, "preferred_batch_sizes": []}
    assert applied["instances"] == [{"kind": "cpu", "count": 1}]
    assert applied["parameters"][PROVENANCE_PARAMETER].startswith("batch 32, delay 500 µs, 1 instance; p95 budget 10 ms")


@pytest.mark.parametrize("model, target, message", [
    ("other", "triton", "tuned for model 'mlp', not 'other'"),
    ("mlp", "torchserve", "tuned on triton, not torchserve"),
])
def test_a_tuned_file_for_another_model_or_server_is_refused(tmp_path, model, target, message):
    path = save(tuned(), tmp_path / "tuned.json")
    with pytest.raises(MfnError, match=message):
        overrides(load(path), path, model, target)


def test_a_file_that_is_not_a_tuned_file_is_refused_by_name(tmp_path):
    path = tmp_path / "tuned.json"
    path.write_text(json.dumps({"format": 1, "model": "mlp"}))
    with pytest.raises(MfnError, match=f"{path} is not a tuned file"):
        load(path)


def test_the_default_grid_starts_with_the_handlers_own_and_searches_each_knob():
    triton, torchserve = default_grid(OWN, "triton"), default_grid(OWN, "torchserve")
    assert triton[0] == OWN == torchserve[0] and len(set(triton)) == len(triton)
    assert {s.max_batch_size for s in triton} == {8, 16, 32} and {s.max_queue_delay_us for s in triton} == {0, 1000}
    assert {s.instances for s in triton} == {1, 2}
    assert {s.preferred_batch_sizes for s in triton} == {(), (4, 8), (8, 16), (16, 32)}
    assert {s.preferred_batch_sizes for s in torchserve} == {()}  # TorchServe has no such setting
