"""`mfn tune` end to end: trials on the real server, the choice, the tuned file, the report and its plot."""

from __future__ import annotations

import tempfile
from pathlib import Path

from mfn.errors import MfnError
from mfn.progress import step
from mfn.tuning.choice import Choice, Trial, choose
from mfn.tuning.trials import default_grid, run_trials
from mfn.tuning.tuned import Settings, Tuned, save

# Seconds a tune spends besides load: packaging, the deploy and its undeploy, k6 warm-ups (measured, rounded up).
OVERHEAD_S = 30.0


def own_settings(ref: str) -> Settings:
    from mfn.packaging import resolve

    spec = resolve(ref).spec
    return Settings(max_batch_size=spec.batching.max_batch_size, max_queue_delay_us=spec.batching.max_queue_delay_us,
                    preferred_batch_sizes=tuple(spec.batching.preferred_batch_sizes),
                    instances=sum(group.count for group in spec.instances), instance_kind=spec.instances[0].kind)


def tune(  # noqa: PLR0913
    ref: str, server: str, latency_budget_ms: float, percentile: float = 95.0, concurrency: int | list[int] = 8,
    sample: Path | None = None, max_minutes: float | None = None, round_s: float = 3.0, rounds: int = 3,
    grid: list[Settings] | None = None, output: Path = Path("tuned.json"),
) -> tuple[Tuned, Choice]:
    """Measure each setting of `grid` (default: the handler's own and a small grid around it) at each concurrency
    and write the choice at the target concurrency (the last one given) to `output`, with the choices at the
    others beside it and a PNG plot of the target's trials when matplotlib is installed.

    Raises:
        MfnError: a percentile k6 does not report, no time for one round of every trial, or what packaging,
            deploying or loading said.
    """
    if percentile not in (50, 95, 99):
        raise MfnError(f"--percentile {percentile:g}: use 50, 95 or 99")
    own = own_settings(ref)
    grid = grid or default_grid(own, server)
    if own not in grid:
        grid = [own, *grid]
    concurrencies = [concurrency] if isinstance(concurrency, int) else list(concurrency)
    if max_minutes is not None:
        budget_s = max_minutes * 60 - OVERHEAD_S
        fitting = int(budget_s // (round_s * rounds * len(concurrencies))) if budget_s > 0 else 0
        if fitting < 1:
            raise MfnError(f"--max-minutes {max_minutes:g} leaves no time for one trial of {rounds} rounds of "
                           f"{round_s:g} s (and about {OVERHEAD_S:g} s to deploy): give more minutes")
        if fitting < len(grid):
            step(f"--max-minutes {max_minutes:g}: measuring the first {fitting} of {len(grid)} settings")
            grid = grid[:fitting]

    def keep(trial: Trial) -> bool:
        return not trial.errors() and trial.latency(percentile)[0] <= 2 * latency_budget_ms

    with tempfile.TemporaryDirectory(prefix="mfn-tune-") as work:
        measured = run_trials(ref, server, grid, concurrencies, round_s, rounds, Path(work), sample, keep)
    choices = {level: choose(trials, latency_budget_ms, percentile, own) for level, trials in measured.items()}
    target_concurrency = concurrencies[-1]
    choice = choices[target_concurrency]
    tuned = Tuned(model=_model_name(ref), server=server, latency_budget_ms=latency_budget_ms, percentile=percentile,
                  concurrency=target_concurrency, chosen=choice.chosen or own, baseline=own,
                  trials=[_trial_json(verdict) for verdict in choice.verdicts],
                  other_concurrencies={str(level): {"chosen": other.chosen.label() if other.chosen else None,
                                                    "gain": other.gain, "trials": [_trial_json(v) for v in other.verdicts]}
                                       for level, other in choices.items() if level != target_concurrency})
    if choice.chosen is None:
        raise MfnError(f"{choice.gain}: raise --latency-budget-ms or lower --concurrency\n{choice.summary()}")
    save(tuned, output)
    plot(choice, latency_budget_ms, percentile, output.with_suffix(".png"),
         title=f"{tuned.model} on {server} at concurrency {target_concurrency}, rounds of {round_s:g} s")
    return tuned, choice


def _model_name(ref: str) -> str:
    from mfn.packaging import resolve

    return resolve(ref).spec.name


def _trial_json(verdict) -> dict:
    return {"settings": verdict.settings.label(), "outcome": verdict.outcome, "why": verdict.why,
            "throughput_rps": verdict.throughput_rps, "latency_ms": verdict.latency_ms, "errors": verdict.errors}


def plot(choice: Choice, budget_ms: float, percentile: float, path: Path, title: str = "") -> Path | None:
    """Write `figure(...)` as a PNG to `path`; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    drawn = figure(choice, budget_ms, percentile, title)
    drawn.savefig(path, dpi=120)
    plt.close(drawn)
    return path


def figure(choice: Choice, budget_ms: float, percentile: float, title: str = ""):
    """Throughput against latency per trial, the budget as a line, the choice in green (a matplotlib Figure).

    Points carry numbers and a key beside the axes names each setting: settings measured alike land on top of
    each other, where their full labels would overlap."""
    import matplotlib.pyplot as plt

    drawn, (axes, key) = plt.subplots(1, 2, figsize=(11, 5), width_ratios=(3, 2))
    entries = []
    for number, verdict in enumerate(choice.verdicts, start=1):
        (rps, rps_low, rps_high), (latency, latency_low, latency_high) = verdict.throughput_rps, verdict.latency_ms
        color = "tab:green" if verdict.outcome == "chosen" else "tab:gray"
        axes.errorbar(latency, rps, xerr=[[latency - latency_low], [latency_high - latency]],
                      yerr=[[rps - rps_low], [rps_high - rps]], fmt="o", color=color)
        axes.annotate(str(number), (latency, rps), fontsize=8, xytext=(4, 4), textcoords="offset points", color=color)
        rounds = f"{verdict.rounds} round{'' if verdict.rounds == 1 else 's'}"
        entries.append(f"{number}. {verdict.settings.label()}\n    {verdict.outcome}, {rounds}")
    axes.axvline(budget_ms, color="tab:red", linestyle="--", label=f"budget {budget_ms:g} ms")
    axes.set_xlabel(f"p{percentile:g} latency (ms)")
    axes.set_ylabel("throughput (requests/s)")
    axes.legend(loc="lower right")
    key.axis("off")
    # Two lines an entry: the font shrinks when many settings would run off the bottom.
    key.text(0, 1, "\n".join(entries), va="top", ha="left", fontsize=min(9.0, 130 / max(len(entries), 1)),
             transform=key.transAxes)
    if title:
        drawn.suptitle(title, fontsize=10)
    drawn.tight_layout()
    return drawn
