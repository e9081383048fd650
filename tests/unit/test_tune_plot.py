"""The tune plot: every text on it readable, none over another, however close the settings measured."""

from __future__ import annotations

import itertools

import pytest

from mfn.tuning.choice import Round, Trial, choose
from mfn.tuning.run import figure, plot
from mfn.tuning.tuned import Settings

matplotlib = pytest.importorskip("matplotlib")


def close_trials(count: int, rounds: int) -> list[Trial]:
    """Settings whose figures differ by a hair: their points nearly touch."""
    trials = []
    for index in range(count):
        trial = Trial(Settings(max_batch_size=2 ** (index + 1), max_queue_delay_us=1000 * (index % 2),
                               preferred_batch_sizes=(1, 2) if index == 1 else (), instances=1 + index % 2))
        trial.rounds = [Round(1000.0 + index, {95: 5.0 + 0.02 * index + 0.01 * r}) for r in range(rounds)]
        trials.append(trial)
    return trials


@pytest.mark.parametrize("count", [2, 6, 12])
def test_no_text_overlaps_another(count):
    trials = close_trials(count, rounds=1)
    matplotlib.use("Agg")
    drawn = figure(choose(trials, 6.0, 95, trials[0].settings), 6.0, 95, "m on triton at concurrency 8, rounds of 1 s")
    drawn.canvas.draw()
    renderer = drawn.canvas.get_renderer()
    axes, key = drawn.axes
    # What the plot writes: point numbers, the key, the title, axis labels, the legend (ticks are matplotlib's).
    texts = [*axes.texts, *key.texts, drawn._suptitle, axes.xaxis.label, axes.yaxis.label, *axes.get_legend().get_texts()]
    boxes = [(text.get_text(), text.get_window_extent(renderer)) for text in texts]
    overlapping = [(a, b) for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2) if box_a.overlaps(box_b)]
    assert overlapping == []
    figure_box = drawn.bbox
    assert all(figure_box.x0 <= box.x0 and box.x1 <= figure_box.x1 and figure_box.y0 <= box.y0 for _, box in boxes)


def test_counts_are_said_in_the_singular_for_one(tmp_path):
    trials = close_trials(2, rounds=1)
    drawn = figure(choose(trials, 6.0, 95, trials[0].settings), 6.0, 95)
    key = " ".join(text.get_text() for text in drawn.findobj(matplotlib.text.Text))
    assert "1 round" in key and "1 rounds" not in key
    assert plot(choose(trials, 6.0, 95, trials[0].settings), 6.0, 95, tmp_path / "tuned.png").stat().st_size > 0
