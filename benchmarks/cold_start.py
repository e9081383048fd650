"""Cold start, split: `mfn deploy` to the first answer, and where each model's load went.

For each server and model: a fresh deployment of that one model (packaged beforehand), timed from the deploy
call to the first answer of a one-row request; the split is what `mfn deploy --json` reports as `cold_start`
(server start; per model: the server's own share of the load, mfn's import and adapter, the handler's import,
setup, warm-up). Each deploy runs `--repeat` times; the table shows medians.

Run: `python benchmarks/cold_start.py [--repeat 3]`; results in benchmarks/results/cold_start.json.
`--timeline SERVER` instead prints, for each deploy of text_stats, when each progress line came (seconds from the
deploy call), when the deploy returned and when the first answer came.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import mfn
from mfn.local import deployments

ROOT = Path(__file__).resolve().parent.parent
MODELS = {
    "text_stats": (f"{ROOT / 'examples/text_stats/handler.py'}:text_stats", {"text": [["cold start"]]}),
    "mlp": (f"{ROOT / 'examples/mlp/handler.py'}:MLP", {"features": [[0.5, 0.5, 0.5, 0.5]]}),
}
COLUMNS = ("first_answer_s", "server_start_s", "server_s", "adapter_s", "handler_import_s", "setup_s", "warm_up_s")


def one_start(path: Path, server: str, model: str, inputs: dict) -> dict[str, float]:
    started = time.monotonic()
    deployment = deployments.deploy(path, name=f"cold-{server}", verify=False)
    try:
        with mfn.Client(deployment.name) as client:
            client.infer(model, inputs)
        first_answer_s = time.monotonic() - started
    finally:
        deployments.undeploy(deployment.name)
    split = deployment.cold_start["models"][model]
    return {"first_answer_s": first_answer_s, "server_start_s": deployment.cold_start["server_start_s"], **split}


def timeline(server: str, repeat: int) -> None:
    from mfn.progress import shown_by

    ref, inputs = MODELS["text_stats"]
    with tempfile.TemporaryDirectory(prefix="mfn-cold-") as scratch:
        mfn.package(ref, Path(scratch), server=server)
        for attempt in range(repeat):
            print(f"deploy {attempt + 1}:")
            started = time.perf_counter()
            with shown_by(lambda line: print(f"  {time.perf_counter() - started:6.3f} s  {line}")):
                deployment = deployments.deploy(scratch, name=f"timeline-{server}", verify=False)
            returned = time.perf_counter() - started
            try:
                with mfn.Client(deployment.name) as client:
                    client.infer("text_stats", inputs)
                print(f"  {returned:6.3f} s  deploy returned\n  {time.perf_counter() - started:6.3f} s  first answer")
            finally:
                deployments.undeploy(deployment.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="Deploys per server and model.")
    parser.add_argument("--timeline", choices=("triton", "torchserve"), help="Only the times of one server's steps.")
    options = parser.parse_args()
    if options.timeline:
        timeline(options.timeline, options.repeat)
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="mfn-cold-") as scratch:
        for server in ("triton", "torchserve"):
            for model, (ref, inputs) in MODELS.items():
                path = Path(scratch) / f"{server}-{model}"
                mfn.package(ref, path, server=server)
                runs = [one_start(path, server, model, inputs) for _ in range(options.repeat)]
                rows.append({"server": server, "model": model, "repeat": options.repeat,
                             **{column: statistics.median(run[column] for run in runs) for column in COLUMNS}})
    print(f"{'server':11} {'model':11} " + " ".join(f"{column.removesuffix('_s'):>14}" for column in COLUMNS))
    for row in rows:
        print(f"{row['server']:11} {row['model']:11} " + " ".join(f"{row[column]:13.2f}s" for column in COLUMNS))
    output = ROOT / "benchmarks" / "results" / "cold_start.json"
    output.write_text(json.dumps({"command": " ".join(["python", "benchmarks/cold_start.py", *sys.argv[1:]]),
                                  "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
