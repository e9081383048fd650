"""`mfn tune` (over mfn.tuning.run), and `mfn package --tuned`: the settings a tune chose, as package overrides."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import click

from mfn.cli.options import MfnCommand, json_option, server_option


def tuned_overrides(tuned: Path, refs: tuple[str, ...], name: str | None, server: str, other_overrides: bool):
    """(batching, instances, parameters) for the one REF the tuned file was made for."""
    if len(refs) > 1 or other_overrides:
        raise click.UsageError("--tuned applies to one REF, and takes the place of --max-batch-size, "
                               "--max-queue-delay-us and --instances")
    from mfn.packaging import resolve
    from mfn.tuning import tuned as tuned_files

    model = resolve(refs[0], name=name).spec.name
    applied = tuned_files.overrides(tuned_files.load(tuned), tuned, model, server)
    return applied["batching"], applied["instances"], applied["parameters"]


@click.command(cls=MfnCommand)
@click.argument("ref")
@server_option("Server to measure on.")
@click.option("--latency-budget-ms", type=click.FloatRange(min=0, min_open=True), required=True,
              help="Latency a request may take at the percentile below.")
@click.option("--percentile", type=click.Choice(["50", "95", "99"]), default="95", show_default=True,
              help="Latency percentile the budget applies to.")
@click.option("--concurrency", default="8", show_default=True, callback=lambda ctx, param, value: _levels(value, ctx, param),
              help="Requests in flight at once (k6 virtual users), e.g. 1,8,32: each is measured; the choice applied "
                   "is the one at the last (the target), the others are reported.")
@click.option("--sample", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="An .npz with one array per input; its first row is the request (default: generated from the spec).")
@click.option("--max-minutes", type=click.FloatRange(min=0, min_open=True),
              help="Time the tune may take: only the settings that fit are measured (default: no limit, every setting).")
@click.option("--rounds", type=click.IntRange(min=1), default=3, show_default=True,
              help="Rounds per setting, alternated between settings; medians and spreads come from them.")
@click.option("--round-seconds", type=click.FloatRange(min=0.5), default=3.0, show_default=True,
              help="Seconds of load in each round on each setting.")
@click.option("--output", "-o", type=click.Path(path_type=Path), default="tuned.json", show_default=True,
              help="The tuned file (`mfn package --tuned` reads it); a PNG plot goes beside it.")
@json_option
def tune(ref, server, latency_budget_ms, percentile, concurrency, sample, max_minutes, rounds, round_seconds, output, as_json):  # noqa: PLR0913
    """Measure REF on the real server under a small grid of batch sizes, queue delays and instance counts, and
    choose the highest throughput within the latency budget; every other setting gets its reason."""
    from mfn.tuning.run import tune as run_tune

    with _progress_display(as_json):
        tuned, choice = run_tune(ref, server, latency_budget_ms, float(percentile), concurrency, sample, max_minutes,
                                 round_seconds, rounds, output=output)
    if as_json:
        click.echo(json.dumps({**tuned.to_json(), "gain": choice.gain, "output": str(output)}))
        return
    for level, other in tuned.other_concurrencies.items():
        click.echo(f"at concurrency {level}: {other['chosen'] or 'no setting within the budget'} ({other['gain']})")
    click.echo(f"at concurrency {tuned.concurrency} (the target):")
    click.echo(choice.summary())
    click.echo(f"chosen: {tuned.chosen.label()}; written to {output} (mfn package {ref} --tuned {output})")


def _levels(value: str, ctx: click.Context, param: click.Parameter) -> list[int]:
    try:
        levels = [int(level) for level in str(value).split(",")]
    except ValueError:
        raise click.BadParameter(f"{value!r}: whole numbers separated by commas, e.g. 1,8,32", ctx, param) from None
    if any(level < 1 for level in levels):
        raise click.BadParameter(f"{value!r}: each concurrency must be at least 1", ctx, param)
    return levels


@contextlib.contextmanager
def _progress_display(quiet: bool):
    """A live line showing the trial being measured (rich), each finished measurement printed above it."""
    if quiet:
        yield
        return
    from rich.console import Console

    from mfn.progress import shown_by

    console = Console(stderr=True)
    with console.status("starting ...") as status:
        def progress(message: str) -> None:
            console.print(message, highlight=False, soft_wrap=True)
            status.update(message)

        with shown_by(progress):
            yield
