"""`mfn rollout ... --target kubernetes`: the chart's `rollout` values for a new package, and the helm upgrades
that start, promote and abort a rollout of a release (chart README, Rollouts).

engine mfn: the new package becomes the chart's `rollout.canary` values (a second Deployment) and the Gateway
API routes carry the weight; `promote` makes the canary's values the release's own and turns the rollout off,
`abort` turns it off. engine argo: the new package's values become the release's own, which starts Argo Rollouts'
canary or blue-green on them; Argo steps, judges and promotes or aborts by itself.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from mfn.errors import MfnError
from mfn.kubernetes.helm import chart_path, check_kubeconfig, find_helm, values_for, _run

ENGINES = ("mfn", "argo")


def rollout_values(  # noqa: PLR0913
    path: Path, release: str, model_uri: str | None, pvc: str | None, strategy: str = "canary", weight: float = 10.0,
    header: str | None = None, header_value: str | None = None, gateways: tuple[str, ...] = (), engine: str = "mfn",
    steps: list[float] | None = None, step_interval_s: float = 30.0, max_error_ratio: float | None = None,
    max_p99_ms: float | None = None,
) -> dict:
    """Values to merge into the release's own (`helm upgrade --reuse-values`) to start the rollout."""
    if engine not in ENGINES:
        raise MfnError(f"engine {engine!r}: use one of {', '.join(ENGINES)}")
    new = values_for(path, release, model_uri, pvc)
    rollout = {
        "enabled": True, "engine": engine, "strategy": strategy, "weight": weight,
        "header": {"name": header or "", "value": header_value or ""},
        "gateway": {"enabled": bool(gateways), "parentRefs": [_parent_ref(gateway) for gateway in gateways]},
        "stepInterval": f"{max(int(step_interval_s), 1)}s",
        "analysis": {"maxErrorRatio": 0.01 if max_error_ratio is None else max_error_ratio, "maxP99Ms": max_p99_ms or 0},
    }
    if steps:
        rollout["steps"] = steps
    if engine == "argo":  # the new package is the release's own template; Argo runs it as the canary
        return {**new, "rollout": rollout}
    return {"rollout": {**rollout, "canary": new}}


def _parent_ref(gateway: str) -> dict:
    namespace, _, name = gateway.rpartition("/")
    return {"name": name, **({"namespace": namespace} if namespace else {})}


def upgrade(release: str, namespace: str, values: dict, dry_run: bool = False) -> str:
    """`helm upgrade RELEASE --reuse-values` with `values` merged in (helm's own --dry-run asks the cluster too)."""
    check_kubeconfig()
    with tempfile.TemporaryDirectory() as scratch:
        values_file = Path(scratch) / "rollout.json"
        values_file.write_text(json.dumps(values, indent=2, sort_keys=True))
        command = [find_helm(), "upgrade", release, str(chart_path()), "--namespace", namespace, "--reuse-values",
                   "--values", str(values_file)]
        return _run(command + (["--dry-run"] if dry_run else ["--wait"]))


def current_values(release: str, namespace: str) -> dict:
    check_kubeconfig()
    return json.loads(_run([find_helm(), "get", "values", release, "--namespace", namespace, "--output", "json"]) or "{}")


def promote_values(current: dict) -> dict:
    """engine mfn: the canary's values become the release's own, the rollout ends."""
    rollout = current.get("rollout") or {}
    if not rollout.get("enabled"):
        raise MfnError("the release has no rollout under way")
    if rollout.get("engine") == "argo":
        raise MfnError("engine argo promotes by itself after its last step; use `kubectl argo rollouts promote`")
    # null removes the canary's values from the release's (helm's rule when --reuse-values merges).
    return {**rollout.get("canary", {}), "rollout": {"enabled": False, "canary": None}}


def abort_values() -> dict:
    return {"rollout": {"enabled": False, "canary": None}}
