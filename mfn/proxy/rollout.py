"""`mfn rollout`: serve a new package beside a deployment and move traffic to it by a strategy, through nginx.

The deployment keeps its name and is the `primary` track; the new package runs as the `canary` track, a
deployment of its own named `NAME-canary`, started with the primary's options. The first rollout of a
deployment puts a proxy in front of it (mfn.proxy.nginx_config): from then on its HTTP and gRPC endpoints are
nginx's and stay, through this rollout and later ones; `mfn.Client(NAME)` and `mfn invoke` find them by name.

A promotion works as Flagger's does: all traffic to the canary, the primary started again from the new package,
all traffic back to the primary, the canary drained and stopped. An abort sends all traffic to the primary and
drains and stops the canary. nginx changes its routing gracefully (SIGHUP: old workers finish what they hold),
so neither loses a request. Stepping and the automatic analysis run in the route's controller process
(mfn.proxy.controller), which also owns nginx and starts it again if it dies.
"""

from __future__ import annotations

import time
from typing import Any
from dataclasses import asdict, replace
from pathlib import Path

from mfn.local import locking, state
from mfn.proxy import routes
from mfn.progress import step
from mfn.proxy.nginx_config import ProxyConfig, Track, check_routing, render
from mfn.proxy.fronting import ACTIVE, apply, fronted, guard, new_route, routing_of, track_of
from mfn.proxy.routes import Rollout, RolloutState, Route
from mfn.errors import MfnError
from mfn.sizes import MAX_BODY_BYTES
from mfn.kinds import Server

CANARY_SUFFIX = "-canary"
DEFAULT_WEIGHT = {"canary": 10.0, "ab": 50.0, "blue-green": 100.0, "shadow": 0.0}


def canary_name(name: str) -> str:
    if len(name) + len(CANARY_SUFFIX) > 63:
        raise MfnError(f"deployment name {name!r} is too long for a rollout: its canary track is named "
                       f"'{name}{CANARY_SUFFIX}', which must fit in 63 characters")
    return name + CANARY_SUFFIX


def plan(strategy: str, path: Path | str, name: str, weight: float | None = None, steps: list[float] | None = None,  # noqa: PLR0913
         step_interval_s: float = 30.0, max_error_ratio: float | None = None, max_p99_ms: float | None = None,
         header: str | None = None, header_value: str | None = None) -> Rollout:
    """The rollout asked for, checked (ValueError names the option) before anything starts."""
    steps = list(steps or [])
    if steps and (strategy != "canary" or any(b <= a for a, b in zip(steps, steps[1:])) or steps[-1] != 100):
        raise ValueError(f"--steps {','.join(f'{s:g}' for s in steps)}: canary only, rising, ending at 100")
    if step_interval_s <= 0:
        raise ValueError("--step-interval must be positive")
    if max_error_ratio is not None and not 0 <= max_error_ratio <= 1:
        raise ValueError(f"--max-error-ratio {max_error_ratio}: a ratio from 0 to 1")
    if max_p99_ms is not None and max_p99_ms <= 0:
        raise ValueError(f"--max-p99-ms {max_p99_ms}: must be positive")
    if strategy == "ab" and not header:
        raise ValueError("--strategy ab needs --header KEY=VALUE (or --header KEY for sticky hashing on its value)")
    chosen = steps[0] if steps else (weight if weight is not None else DEFAULT_WEIGHT.get(strategy, 0.0))
    if strategy == "blue-green":
        chosen = 100.0  # the switch; start warms and checks the canary first
    rollout = Rollout(strategy=strategy, canary=canary_name(name), path=str(Path(path).resolve()), weight=chosen,
                      steps=steps, step_interval_s=step_interval_s, max_error_ratio=max_error_ratio,
                      max_p99_ms=max_p99_ms, header=header, header_value=header_value)
    check_routing(routing_of(rollout), has_canary=True)
    return rollout


def start(name: str, rollout: Rollout, ports: dict[str, int] | None = None) -> Route:
    """Start the canary track and route traffic to it by the rollout's strategy.

    Raises:
        MfnError: no such deployment, a rollout already under way, a package for the other server, or a track
            or the proxy that did not start (nothing of this rollout is left running then).
    """
    from mfn.local import deployments

    primary = fronted(name)
    with locking.exclusive(name):
        route = routes.load(name)
        if route is not None and route.rollout is not None and route.rollout.state in ACTIVE:
            raise MfnError(f"{name} is already rolling out {route.rollout.path} ({route.rollout.state}); "
                           f"`mfn rollout promote {name}` or `mfn rollout abort {name}` first")
    step(f"starting the canary track {rollout.canary} from {rollout.path} ...")
    canary = deployments.deploy_like(name, rollout.path, rollout.canary, track_of=name)
    try:
        _check_ready(canary)
        with locking.exclusive(name):
            route = routes.load(name) or new_route(primary, ports or {})
            now = time.time()
            route.rollout = replace(rollout, started_at=now, last_step_at=now,
                                    history=[{"at": now, "weight": rollout.weight, "note": "started"}])
            routes.save(route)
            apply(route)
            return routes.get(name)
    except BaseException:
        _forget_canary(name, rollout.canary)
        raise


def _check_ready(deployment: state.Deployment) -> None:
    """Every model of the track answers its readiness check (deploy already waited for setup and warm-up)."""
    from mfn.local.supervision import Health, read_status

    models = read_status(deployment).models
    unready = {model: models[model].health if model in models else "not loaded"
               for model in deployment.models if model not in models or models[model].health != Health.READY}
    if unready:
        raise MfnError(f"the canary track {deployment.name} is not ready: {unready}")


def _forget_canary(name: str, canary: str) -> None:
    from mfn.local import deployments

    if state.load(canary) is not None:
        deployments.undeploy(canary)


def set_weight(name: str, weight: float, note: str) -> Route:
    with locking.exclusive(name):
        route = _active(name)
        route.active.weight = weight
        route.active.last_step_at = time.time()
        route.active.history.append({"at": route.active.last_step_at, "weight": weight, "note": note})
        routes.save(route)
        apply(route)
        return route


def promote(name: str) -> Route:
    """All traffic to the new package: the canary takes it, the primary is started again from the new package
    and takes it back, the canary is drained and stopped."""
    from mfn.local import deployments

    with locking.exclusive(name):
        route = _active(name)
        rollout = route.active
        rollout.state, rollout.strategy, rollout.weight = RolloutState.PROMOTING, "canary", 100.0
        routes.save(route)
        apply(route)
    step(f"all traffic on {rollout.canary}; starting {name} again from {rollout.path} ...")
    deployments.deploy_like(name, rollout.path, name)
    with locking.exclusive(name):
        route = routes.get(name)
        route.active.weight = 0.0
        apply(route)  # all traffic back on the primary, now the new package
        _end(route, RolloutState.PROMOTED, "promoted")
        routes.save(route)
    step(f"draining and stopping {rollout.canary} ...")
    deployments.undeploy(rollout.canary)
    return routes.get(name)


def abort(name: str, why: str = "aborted by the operator") -> Route:
    """All traffic back on the primary at once; the canary drained and stopped."""
    from mfn.local import deployments

    with locking.exclusive(name):
        route = _active(name)
        _end(route, RolloutState.ROLLED_BACK, why)
        apply(route)  # before the record says so: whoever reads "rolled back" sees no more canary answers
        routes.save(route)
    step(f"all traffic on {name}; draining and stopping {route.active.canary} ...")
    if state.load(route.active.canary) is not None:
        deployments.undeploy(route.active.canary)
    return routes.get(name)


def _end(route: Route, final_state: RolloutState, why: str) -> None:
    rollout = route.active
    rollout.state, rollout.why = final_state, why
    rollout.analysis = {}  # the last window compared the tracks while both served: stale once one is gone
    rollout.history.append({"at": time.time(), "weight": 0.0 if final_state == RolloutState.ROLLED_BACK else 100.0, "note": why})


def _active(name: str) -> Route:
    route = routes.load(name)
    if route is None or route.rollout is None or route.rollout.state not in ACTIVE:
        last = f" (the last one: {route.rollout.state}, {route.rollout.why})" if route and route.rollout else ""
        raise MfnError(f"{name} has no rollout under way{last}; start one with `mfn rollout start {name} PATH`")
    return route


def status(name: str) -> dict:
    """The rollout's state, weights and endpoints, and each track's requests, error ratio and latency since its
    server started (mfn.monitoring.stats)."""
    from mfn.monitoring.stats import deployment_stats

    route = routes.load(name)
    if route is None:
        state.get(name)  # the error for an unknown name
        raise MfnError(f"{name} has had no rollout; start one with `mfn rollout start {name} PATH`")
    report: dict[str, Any] = {"name": name, "endpoints": {"http": f"http://{route.host}:{route.ports['http']}",
                                          "grpc": f"{route.host}:{route.ports['grpc']}"},
              "proxy_running": routes.nginx_pid(route) is not None,
              "rollout": asdict(route.rollout) if route.rollout else None, "tracks": {}}
    tracks = {"primary": name}
    if route.rollout is not None and route.rollout.state in ACTIVE:
        tracks["canary"] = route.rollout.canary
        active = route.rollout
        report["weights"] = {"canary": active.weight, "primary": 100.0 - active.weight} \
            if active.strategy in ("canary", "blue-green") else None
    for track, deployment_name in tracks.items():
        deployment = state.load(deployment_name)
        if deployment is None:
            continue
        try:
            rows = [row.to_json() for row in deployment_stats(deployment)]
        except MfnError as error:
            rows = [{"error": str(error)}]
        report["tracks"][track] = {"deployment": deployment_name, "package": deployment.repository, "models": rows}
    return report


def run_dry(name: str, rollout: Rollout) -> str:
    """The proxy configuration `start` would use, with the canary's ports still unknown (0)."""
    primary = state.get(name)
    route = routes.load(name)
    key = routes.callers_key(route) if route else ("<generated>" if state.read_key(primary, "inference") else None)
    ports = route.ports if route else {"http": 0, "grpc": 0}
    config = ProxyConfig(server=primary.server, host=primary.host, http_port=ports["http"], grpc_port=ports["grpc"],
                         key=key, body_limit_bytes=primary.max_request_bytes or MAX_BODY_BYTES,
                         directory=str(routes.route_dir(name)), primary=track_of(primary),
                         canary=Track(f"{primary.host}:0", f"{primary.host}:0", "<canary's key>"),
                         routing=routing_of(rollout), guard=guard() if primary.server == Server.TRITON else None)
    return render(config)

