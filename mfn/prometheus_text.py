"""Prometheus text exposition, read once for every part of mfn that counts from a metrics page: `mfn stats`, the
rollout controller's comparison, the drain's accounting, an idle deployment's history."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sample:
    name: str  # as the page exposes it
    labels: dict[str, str]
    value: float
    kind: str  # the family's TYPE: counter, gauge, histogram, summary, or unknown


def samples(text: str) -> list[Sample]:
    """Every sample of a page, parsed by prometheus_client.

    The parser names a counter's samples `<name>_total` even where the page exposes `<name>` (Triton's counters do);
    the name is given back as exposed, so a page read twice, or written back out, keeps its names.
    """
    from prometheus_client.parser import text_string_to_metric_families

    exposed = {line.split("{", 1)[0].split(" ", 1)[0] for line in text.splitlines() if line and line[0] != "#"}
    return [Sample(sample.name if sample.name in exposed else sample.name.removesuffix("_total"), sample.labels,
                   sample.value, family.type)
            for family in text_string_to_metric_families(text) for sample in family.samples]
