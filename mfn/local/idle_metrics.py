"""An idle deployment's metrics: what its metrics port says while the server sleeps, and the counts of its
earlier runs.

While the server is stopped for idleness, the front answers the metrics port with the server's last scrape
and `mfn_asleep 1`: Prometheus's `up` stays 1, so an asleep deployment does not look down, and the counters
keep their last values. The woken server counts from zero again, which `rate()` and `increase()` take as the
counter reset it is. At each wake the last scrape's counters are added to the deployment's history (a file in
its work directory, written by the supervisor only), and `mfn stats` adds that history to the live figures: it
reports since the deploy, across sleeps.
"""

from __future__ import annotations

from pathlib import Path

ASLEEP_GAUGE = "mfn_asleep"
HISTORY_FILE = "metrics_history.prom"
# Families whose samples add up across runs; gauges (and the quantiles of summaries) describe one moment only.
_SUMMED_TYPES = ("counter", "histogram", "summary", "unknown")
ASLEEP_PAGE_TAIL = (f"# HELP {ASLEEP_GAUGE} 1 while the server is stopped for idleness (the counters above are its last "
                    f"scrape; the next request wakes it)\n# TYPE {ASLEEP_GAUGE} gauge\n{ASLEEP_GAUGE} 1\n")


def asleep_page(last_scrape: str) -> bytes:
    """What the metrics port answers while the server sleeps: its last scrape, then `mfn_asleep 1`."""
    head = last_scrape.rstrip("\n") + "\n" if last_scrape.strip() else ""
    return (head + ASLEEP_PAGE_TAIL).encode()


def history(workdir: Path | str) -> str:
    """The summed counters of the deployment's earlier runs (Prometheus text, untyped); "" before the first wake."""
    try:
        return (Path(workdir) / HISTORY_FILE).read_text()
    except FileNotFoundError:
        return ""


def add_to_history(workdir: Path | str, last_scrape: str) -> None:
    """Add the counters of a run that ended (its server's last scrape) to the history."""
    from mfn.files import written_atomically

    if not last_scrape.strip():
        return
    summed = summed_counters([history(workdir), last_scrape])
    with written_atomically(Path(workdir) / HISTORY_FILE) as temporary:
        temporary.write_text(summed)


def summed_counters(texts: list[str]) -> str:
    """The counter, histogram and summary samples of Prometheus texts, equal names and labels added up, as
    untyped Prometheus text (sample names as the pages expose them)."""
    from mfn.prometheus_text import samples

    totals: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for text in texts:
        for sample in samples(text):
            if sample.kind not in _SUMMED_TYPES or sample.name.endswith("_created") or "quantile" in sample.labels:
                continue
            key = (sample.name, tuple(sorted(sample.labels.items())))
            totals[key] = totals.get(key, 0.0) + sample.value
    lines = []
    for (name, labels), value in sorted(totals.items()):
        rendered = ",".join(f'{label}="{_escaped(text)}"' for label, text in labels)
        lines.append(f"{name}{{{rendered}}} {value!r}" if labels else f"{name} {value!r}")
    return "".join(line + "\n" for line in lines)


def _escaped(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
