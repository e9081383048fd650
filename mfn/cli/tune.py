"""`mfn package --tuned`: the settings a tune chose, as package overrides (mfn.tuning.tuned)."""

from __future__ import annotations

from pathlib import Path

import click


def tuned_overrides(tuned: Path, refs: tuple[str, ...], name: str | None, target: str, other_overrides: bool):
    """(batching, instances, parameters) for the one REF the tuned file was made for."""
    if len(refs) > 1 or other_overrides:
        raise click.UsageError("--tuned applies to one REF, and takes the place of --max-batch-size, "
                               "--max-queue-delay-us and --instances")
    from mfn.packaging import resolve
    from mfn.tuning import tuned as tuned_files

    model = resolve(refs[0], name=name).spec.name
    applied = tuned_files.overrides(tuned_files.load(tuned), tuned, model, target)
    return applied["batching"], applied["instances"], applied["parameters"]
