"""`mfn tune` on the examples: the setting it chooses against the handler's own, measured in the same alternating
rounds at the same latency budget and concurrency, on both servers.

Run: `python benchmarks/tune_examples.py [--budget-ms 20] [--concurrency 16] [--rounds 3] [--round-seconds 3]`;
results in benchmarks/results/tune_examples.json, tuned files and plots beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mfn.tuning.run import own_settings, tune  # noqa: E402
from mfn.progress import shown_by  # noqa: E402

EXAMPLES = {
    "text_stats": f"{ROOT / 'examples/text_stats/handler.py'}:text_stats",
    "mlp": f"{ROOT / 'examples/mlp/handler.py'}:MLP",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-ms", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--round-seconds", type=float, default=3.0)
    options = parser.parse_args()
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    rows = []
    for model, ref in EXAMPLES.items():
        for server in ("triton", "torchserve"):
            with shown_by(lambda message: print(f"  {message}", flush=True)):
                tuned, choice = tune(ref, server, options.budget_ms, 95.0, options.concurrency, None, None,
                                     options.round_seconds, options.rounds, output=out / f"tuned-{model}-{server}.json")
            own = own_settings(ref)
            verdicts = {verdict.settings: verdict for verdict in choice.verdicts}
            rows.append({"model": model, "server": server, "own": own.label(), "chosen": tuned.chosen.label(),
                         "own_rps": verdicts[own].throughput_rps, "own_p95_ms": verdicts[own].latency_ms,
                         "chosen_rps": verdicts[tuned.chosen].throughput_rps,
                         "chosen_p95_ms": verdicts[tuned.chosen].latency_ms, "gain": choice.gain})
            print(json.dumps(rows[-1]), flush=True)
    (out / "tune_examples.json").write_text(json.dumps(rows, indent=2))
    print("| model | server | own setting: req/s (min–max), p95 ms | chosen setting: req/s (min–max), p95 ms | verdict |")
    print("|---|---|---|---|---|")
    for row in rows:
        own = f"{row['own']}: {row['own_rps'][0]:.0f} ({row['own_rps'][1]:.0f}–{row['own_rps'][2]:.0f}), {row['own_p95_ms'][0]:.2f}"
        chosen = f"{row['chosen']}: {row['chosen_rps'][0]:.0f} ({row['chosen_rps'][1]:.0f}–{row['chosen_rps'][2]:.0f}), {row['chosen_p95_ms'][0]:.2f}"
        print(f"| {row['model']} | {row['server']} | {own} | {chosen} | {row['gain']} |")


if __name__ == "__main__":
    main()
