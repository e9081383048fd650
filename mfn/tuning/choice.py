"""The choice rule of `mfn tune`, on measured figures only: the highest throughput within the latency budget at
the target concurrency, with every other trial's reason, and honesty about noise.

Each trial is measured in several rounds, alternated with the other trials; a trial's figure is its median over
the rounds and its spread the rounds' min-max. Two trials whose throughput spreads overlap are not told apart:
the report says so ("within the noise") rather than calling one faster.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from mfn.tuning.tuned import Settings


@dataclass(frozen=True)
class Round:
    """One round of load on one trial."""

    throughput_rps: float
    latency_ms: dict[float, float]  # percentile -> milliseconds, e.g. {50: 1.2, 95: 3.4, 99: 5.0}
    errors: int = 0


@dataclass
class Trial:
    settings: Settings
    rounds: list[Round] = field(default_factory=list)

    def throughput(self) -> tuple[float, float, float]:
        """Median, min and max requests per second over the rounds."""
        values = [r.throughput_rps for r in self.rounds]
        return statistics.median(values), min(values), max(values)

    def latency(self, percentile: float) -> tuple[float, float, float]:
        values = [r.latency_ms[percentile] for r in self.rounds]
        return statistics.median(values), min(values), max(values)

    def errors(self) -> int:
        return sum(r.errors for r in self.rounds)


@dataclass
class Verdict:
    settings: Settings
    throughput_rps: tuple[float, float, float]
    latency_ms: tuple[float, float, float]
    errors: int
    outcome: str  # "chosen", "over budget", "errors", "slower", "within the noise"
    why: str
    rounds: int = 0  # measured: a trial the first round ruled out is not measured again


@dataclass
class Choice:
    chosen: Settings | None
    verdicts: list[Verdict]
    gain: str  # over the handler's own settings, in words

    def summary(self) -> str:
        lines = [f"{v.outcome:>16}: {v.settings.label()} - {v.why}" for v in self.verdicts]
        return "\n".join(lines + [self.gain])


def choose(trials: list[Trial], budget_ms: float, percentile: float, baseline: Settings) -> Choice:
    """Pick the trial with the highest median throughput among those with no errors and a median latency at
    `percentile` within `budget_ms`; say why each other trial lost."""
    measured = [trial for trial in trials if trial.rounds]
    eligible = [t for t in measured if not t.errors() and t.latency(percentile)[0] <= budget_ms]
    best = max(eligible, key=lambda t: t.throughput()[0], default=None)
    verdicts = []
    for trial in measured:
        rps, p = trial.throughput(), trial.latency(percentile)
        figures = f"{rps[0]:.0f} req/s ({rps[1]:.0f}-{rps[2]:.0f}), p{percentile:g} {p[0]:.2f} ms ({p[1]:.2f}-{p[2]:.2f})"
        if trial is best:
            outcome, why = "chosen", f"{figures}: the highest throughput within the budget"
        elif trial.errors():
            outcome, why = "errors", f"{trial.errors()} failed requests; {figures}"
        elif p[0] > budget_ms:
            outcome, why = "over budget", f"p{percentile:g} {p[0]:.2f} ms is above the budget of {budget_ms:g} ms; {figures}"
        elif best is None:  # unreachable: a trial with no errors within the budget would be eligible
            outcome, why = "slower", figures
        elif rps[2] >= best.throughput()[1]:
            outcome, why = "within the noise", f"{figures}: its throughput overlaps the choice's ({best.throughput()[1]:.0f}-{best.throughput()[2]:.0f}); the two are not told apart"
        else:
            outcome, why = "slower", f"{figures}, below the choice's {best.throughput()[0]:.0f} req/s"
        why += " [the handler's own settings]" if trial.settings == baseline else ""
        verdicts.append(Verdict(trial.settings, rps, p, trial.errors(), outcome, why, len(trial.rounds)))
    verdicts.sort(key=lambda v: (v.outcome != "chosen", -v.throughput_rps[0]))
    gain = _gain(measured, best, baseline, budget_ms, percentile)
    if best is not None and len(best.rounds) < 2:
        gain += " (one round each: the spread, and so the noise, was not measured)"
    return Choice(best.settings if best else None, verdicts, gain)


def _gain(trials: list[Trial], best: Trial | None, baseline: Settings, budget_ms: float, percentile: float) -> str:
    if best is None:
        fastest = min((t.latency(percentile)[0] for t in trials), default=None)
        closest = f"; the lowest p{percentile:g} measured was {fastest:.2f} ms" if fastest is not None else ""
        return f"no setting met the p{percentile:g} budget of {budget_ms:g} ms without errors{closest}"
    own = next((t for t in trials if t.settings == baseline), None)
    if own is None:
        return "the handler's own settings were not measured"
    if own is best:
        return "the handler's own settings are the choice: nothing to gain"
    if own.throughput()[2] >= best.throughput()[1]:
        return "no measurable gain over the handler's own settings: their throughputs overlap"
    return f"{best.throughput()[0] / own.throughput()[0]:.2f}x the throughput of the handler's own settings"
