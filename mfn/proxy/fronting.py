"""The proxy in front of a deployment: its nginx configuration from the records, and putting it there.

A deployment is fronted from the start with `mfn deploy --proxy` (its ports then stay the same through every
rollout), and always when it serves open inference (`--no-auth`, unless an idle Triton): the server keeps its keys
and the proxy speaks to it with them, so nobody goes around the proxy. In front of Triton the proxy guards HTTP
bodies (mfn.proxy.nginx_config); TorchServe's one authorization switch would also have opened its management
APIs. Rollouts (mfn.proxy.rollout) put a canary track behind the same proxy.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from mfn.local import locking, state
from mfn.proxy import routes
from mfn.proxy.nginx_config import Guard, ProxyConfig, Routing, Track, render
from mfn.proxy.routes import Rollout, RolloutState, Route
from mfn.errors import MfnError
from mfn.sizes import MAX_BODY_BYTES
from mfn.servers.process import free_ports
from mfn.kinds import Server

ACTIVE = (RolloutState.PROGRESSING, RolloutState.PROMOTING)
GUARD_SCRIPT = Path(__file__).with_name("guard.js")
JS_MODULE = "ngx_http_js_module.so"


def routing_of(rollout: Rollout | None) -> Routing:
    if rollout is None or rollout.state not in ACTIVE:
        return Routing("canary", 0.0)
    return Routing(rollout.strategy, rollout.weight, rollout.header, rollout.header_value)


def proxy_config(route: Route) -> ProxyConfig:
    """The proxy's configuration from the route and the tracks' records as they are now."""
    primary = state.get(route.name)
    canary = state.load(route.rollout.canary) if route.rollout is not None and route.rollout.state in ACTIVE else None
    limits = [d.max_request_bytes or MAX_BODY_BYTES for d in (primary, canary) if d is not None]
    return ProxyConfig(
        server=route.server, host=route.host, http_port=route.ports["http"], grpc_port=route.ports["grpc"],
        key=routes.callers_key(route), body_limit_bytes=max(limits), directory=str(route.directory),
        primary=track_of(primary), canary=track_of(canary) if canary is not None else None,
        routing=routing_of(route.rollout) if canary is not None else Routing("canary", 0.0),
        worker_user=root_name(), guard=guard() if route.server == Server.TRITON else None,
    )


def guard() -> Guard:
    """The guard for Triton's HTTP endpoint: njs, from beside the nginx binary (make setup) or the system's modules.

    Raises:
        MfnError: nginx has no njs module, naming what to install.
    """
    binary = Path(os.path.realpath(routes.nginx_binary()))
    for directory in (binary.parents[1] / "lib" / "nginx" / "modules", Path("/usr/lib/nginx/modules")):
        if (directory / JS_MODULE).is_file():
            return Guard(module=str(directory / JS_MODULE), script=str(GUARD_SCRIPT))
    raise MfnError(f"nginx's njs module ({JS_MODULE}) is missing: mfn's proxy runs its guard for Triton with it. "
                   "`make setup` installs it (scripts/install_nginx.py); elsewhere install libnginx-mod-http-js")


def root_name() -> str | None:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name if os.geteuid() == 0 else None


def track_of(deployment: state.Deployment) -> Track:
    """Where the proxy sends a track's requests: its server, or the idle front that holds them while it sleeps (whose
    ports, unlike the server's, stay the same across wake-ups)."""
    ports = deployment.front or deployment.ports
    return Track(http=f"{deployment.host}:{ports['http']}", grpc=f"{deployment.host}:{ports['grpc']}",
                 key=state.read_key(deployment, "inference"))


def apply(route: Route) -> None:
    """Render the proxy's configuration from the records and make nginx use it: reloaded where it runs, started
    with its controller where none runs yet (the caller holds the route's lock)."""
    routes.write_config(route, render(proxy_config(route)))
    if routes.nginx_pid(route) is not None:
        routes.reload_nginx(route)
    elif not route.controller_running:
        routes.start_controller(route)


def open_route(name: str, ports: dict[str, int | None] | None = None, callers_need_key: bool = True) -> Route:
    """Put the proxy in front of deployment `name` without a rollout (all traffic to it), on `ports` where given:
    its endpoints then stay the same through every later rollout (`mfn deploy --proxy`). Without
    `callers_need_key`, callers reach inference without a key (`mfn deploy --no-auth`)."""
    primary = fronted(name, idle_allowed=True)
    with locking.exclusive(name):
        route = routes.load(name)
        if route is None:
            route = new_route(primary, {protocol: port for protocol, port in (ports or {}).items() if port},
                              callers_need_key)
        if not route.controller_running:
            apply(route)
        return routes.get(name)


def fronted(name: str, idle_allowed: bool = False) -> state.Deployment:
    """The running deployment `name`, which a proxy can be put in front of; one that stops when idle only where
    `idle_allowed` (the proxy then sends to its front; a rollout's canary is not built to sleep)."""
    primary = state.get(name)
    if not primary.running:
        raise MfnError(f"deployment {name!r} is not running; deploy it first")
    if primary.front and not idle_allowed:
        raise MfnError(f"deployment {name!r} stops when idle (--idle-timeout), which a rollout cannot follow yet: "
                       "deploy it without --idle-timeout to roll out")
    return primary


def follow_tracks(name: str, give_up: Callable[[], bool] | None = None) -> bool:
    """Write the proxy's configuration again where a track changed under it (a restarted server may have new ports,
    and TorchServe makes new keys at every start) and make nginx use it; True when it did. `give_up` as for the
    deployment's lock (mfn.local.locking.exclusive)."""
    route = routes.load(name)
    if route is None or render(proxy_config(route)) == (route.directory / routes.CONFIG_FILE).read_text():
        return False
    with locking.exclusive(name, give_up):
        current = routes.load(name)
        if current is None:
            return False
        apply(current)
        return True


def new_route(primary: state.Deployment, ports: dict[str, int], callers_need_key: bool = True) -> Route:
    """A route for `primary`; a deployment first fronted by a rollout serves keyed inference (open inference is
    fronted when deployed, see mfn.local.deployments.deploy)."""
    chosen = dict(zip(("http", "grpc"), free_ports(2)))
    chosen.update({protocol: port for protocol, port in ports.items() if port})
    from mfn.local.launching import check_ports_free

    check_ports_free(primary.host, chosen)
    with_key = callers_need_key and state.read_key(primary, "inference") is not None
    return routes.create(primary.name, primary.server, primary.host, chosen, with_key=with_key)
