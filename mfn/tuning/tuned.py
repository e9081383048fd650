"""The tuned file: the settings `mfn tune` chose, with the evidence, and how `mfn package --tuned` applies them.

The settings never go into the user's source: `mfn package REF --tuned tuned.json` passes them as the same
overrides `--max-batch-size`, `--max-queue-delay-us` and `--instances` give, and records in the spec's
`parameters` (config.pbtxt's parameters on Triton; the packaged spec on both servers) that they came from a tune.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mfn.errors import MfnError

FORMAT = 1
PROVENANCE_PARAMETER = "mfn_tuned"


@dataclass(frozen=True)
class Settings:
    """One trial's serving settings: the knobs `mfn tune` searches."""

    max_batch_size: int
    max_queue_delay_us: int = 0
    preferred_batch_sizes: tuple[int, ...] = ()
    instances: int = 1
    instance_kind: str = "cpu"  # what the trials ran on; a tune on CPUs says nothing of GPU instances

    def label(self) -> str:
        preferred = f", preferred {list(self.preferred_batch_sizes)}" if self.preferred_batch_sizes else ""
        return f"batch {self.max_batch_size}, delay {self.max_queue_delay_us} µs{preferred}, {self.instances} instance{'' if self.instances == 1 else 's'}"


@dataclass
class Tuned:
    """What a tune found: the model and server it measured, the rule, the choice, and every trial's figures."""

    model: str
    server: str
    latency_budget_ms: float
    percentile: float
    concurrency: int
    chosen: Settings
    baseline: Settings
    trials: list[dict] = field(default_factory=list)
    # The choice at each other concurrency measured, for the report; the settings applied are `chosen`'s.
    other_concurrencies: dict[str, dict] = field(default_factory=dict)
    format: int = FORMAT

    def to_json(self) -> dict:
        return asdict(self)


def save(tuned: Tuned, path: Path) -> Path:
    path.write_text(json.dumps(tuned.to_json(), indent=2, sort_keys=True) + "\n")
    return path


def load(path: Path | str) -> Tuned:
    """Raises MfnError naming the file and what is wrong with it."""
    path = Path(path)
    try:
        document = json.loads(path.read_text())
        if document.get("format") != FORMAT:
            raise MfnError(f"{path}: format {document.get('format')!r} is not {FORMAT}; run `mfn tune` again")
        document["chosen"] = _settings(document["chosen"])
        document["baseline"] = _settings(document["baseline"])
        if "target" in document:  # how files of earlier releases name the server
            document["server"] = document.pop("target")
        return Tuned(**document)
    except OSError as error:
        raise MfnError(f"cannot read the tuned file {path}: {error.strerror}") from None
    except (ValueError, KeyError, TypeError) as error:
        raise MfnError(f"{path} is not a tuned file written by `mfn tune` ({error}); run `mfn tune` again") from None


def _settings(document: dict) -> Settings:
    return Settings(**{**document, "preferred_batch_sizes": tuple(document.get("preferred_batch_sizes", ()))})


def overrides(tuned: Tuned, path: Path | str, model: str, server: str) -> dict:
    """The package overrides for `model` on `server`; refused when the file was tuned for another model or server."""
    if tuned.model != model:
        raise MfnError(f"{path} was tuned for model {tuned.model!r}, not {model!r}: tune this one with `mfn tune`")
    if tuned.server != server:
        raise MfnError(f"{path} was tuned on {tuned.server}, not {server}: the best settings differ between servers; "
                       f"package with --server {tuned.server} or tune for {server}")
    chosen = tuned.chosen
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]
    return {
        "batching": {"max_batch_size": chosen.max_batch_size, "max_queue_delay_us": chosen.max_queue_delay_us,
                     "preferred_batch_sizes": list(chosen.preferred_batch_sizes)},
        "instances": [{"kind": chosen.instance_kind, "count": chosen.instances}],
        "parameters": {PROVENANCE_PARAMETER: f"{chosen.label()}; p{tuned.percentile:g} budget "
                                             f"{tuned.latency_budget_ms:g} ms at concurrency {tuned.concurrency}; "
                                             f"tuned file sha256 {digest}"},
    }
