"""Deploy packaged models to a server process on this machine (tritonserver or TorchServe), and stop it."""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from mfn.local import locking, state
from mfn.local.launching import (
    DRAIN_TIMEOUT_S,
    LOAD_TIMEOUT_S,
    STOP_GRACE_S,
    interrupts_held,
    new_shm_prefix,
    remove_shm_regions,
)
from mfn.local.servers import local_server
from mfn.progress import shown_by, step
from mfn.local.state import Deployment
from mfn.store import Store, discover
from mfn.errors import DeployError, MfnError
from mfn.sizes import MAX_BODY_BYTES
from mfn.servers.process import stop_process_group
from mfn.kinds import Server

if TYPE_CHECKING:
    from mfn.local.supervision import DeployOptions
    from mfn.local.supervision import Status as SupervisorStatus


def deploy(  # noqa: PLR0913
    path: Path | str,
    name: str | None = None,
    models: list[str] | None = None,
    auth: bool = True,
    monitor: bool = False,
    progress: Callable[[str], None] | None = None,
    drain_timeout_s: float = DRAIN_TIMEOUT_S,
    max_request_bytes: int = MAX_BODY_BYTES,
    jvm_heap_mb: int | None = None,
    verify: bool = True,
    public_key: Path | str | None = None,
    host: str = "127.0.0.1",
    ports: dict[str, int] | None = None,
    load_timeout_s: float = LOAD_TIMEOUT_S,
    idle_timeout_s: float | None = None,
    proxy: bool = False,
) -> Deployment:
    """Start a supervised server for the models in `path`, load each, and record the deployment.

    A supervisor process owns the server from then on: it reloads a model whose worker died, restarts a
    server that died (same ports, models reloaded), and drains in-flight requests when stopped.

    Args:
        path: A Triton model repository / model directory, or a TorchServe model store / archive.
        name: Deployment name, a DNS-1123 label (see state.check_name); defaults to the directory's name made valid.
        models: Load only these models.
        auth: Inference behind the deployment's key (mfn's clients read the key file). The admin APIs always need
            theirs; TorchServe, whose one switch would open both, serves open inference through the proxy.
        monitor: Also start a Prometheus on 127.0.0.1 that scrapes the server; `undeploy` stops it.
        progress: Also called with each progress line (see mfn.progress, whose logger has them all).
        drain_timeout_s: How long `undeploy` lets in-flight requests finish before stopping the server.
        max_request_bytes: Largest request or response body (TorchServe, REST and gRPC; tritonserver 2.51
            has no such setting); raised where a model needs more for a full batch (see
            mfn.runtime.codec.limits.body_limit).
        jvm_heap_mb: TorchServe's frontend heap; default: sized for the body limit
            (mfn.servers.torchserve.launch.default_jvm_heap_mb).
        verify: Check each model's package against its digest manifest first (see mfn.signing).
        public_key: Also check each package's signature with this public key (PEM).
        host: Address the server listens on (default loopback only; "0.0.0.0" for every interface, with auth on).
        ports: Fixed ports by name ("http", "grpc", "metrics"); free ones for the rest.
        load_timeout_s: How long one model's load (its handler's setup) may take.
        idle_timeout_s: Stop the server after this long without traffic; a front keeps the HTTP and gRPC ports and
            wakes it on the next request, which waits meanwhile (see mfn.local.idling).
        proxy: Serve through mfn's proxy (nginx) on the public ports from the start, so later rollouts keep them.

    Raises:
        DeployError: the server did not start or a model failed to load (with the server's reason);
            nothing is left running then.
    """
    store = discover(Path(path))
    chosen = models or list(store.models)
    unknown = sorted(set(chosen) - set(store.models))
    if unknown:
        raise MfnError(f"models {unknown} are not in {store.root} (it has {', '.join(store.models)})")
    name = state.check_name(name) if name is not None else state.name_from(store.root.name)
    # Open inference is served through mfn's proxy: in front of Triton it refuses the bodies that crash tritonserver,
    # and TorchServe, whose one authorization switch would also open its management APIs, keeps its keys behind it.
    proxy = proxy or not auth
    if proxy and idle_timeout_s and store.server == Server.TORCHSERVE:
        raise MfnError("TorchServe makes new keys at every start, and requests the proxy sent while it slept carry the "
                       "old one, so on TorchServe --idle-timeout does not go with --proxy, nor with --no-auth (served "
                       "through the proxy): choose one")
    ports = dict(ports or {})
    public = {protocol: ports.pop(protocol, None) for protocol in ("http", "grpc")} if proxy else {}
    from mfn.signing import prepare_for_serving

    prepare_for_serving([unit for model in chosen for unit in store.models[model]], public_key, verify)
    from mfn.local.supervision import DeployOptions

    # Behind the proxy, the server keeps its keys whoever the proxy lets in: nobody bypasses it.
    options = DeployOptions(auth=auth or proxy, drain_timeout_s=drain_timeout_s, max_request_bytes=max_request_bytes,
                            jvm_heap_mb=jvm_heap_mb, host=host, ports={key: port for key, port in ports.items() if port},
                            load_timeout_s=load_timeout_s, idle_timeout_s=idle_timeout_s)
    with shown_by(progress), locking.exclusive(name), _gpu_hint(store, chosen):
        deployment = _deploy_locked(store, Path(path), name, chosen, options)
        if monitor:
            _monitor(deployment)
    if proxy:
        from mfn.proxy import fronting

        try:
            deployment.proxy = dict(fronting.open_route(name, public, callers_need_key=auth).ports)
        except BaseException:
            undeploy(name)
            raise
    return deployment


@contextlib.contextmanager
def _gpu_hint(store: Store, models: list[str]) -> Iterator[None]:
    """A failed deploy of models that ask for GPU instances, on a machine with no NVIDIA device, says how to run
    them on CPUs (the servers' own words speak of CUDA or instance groups)."""
    try:
        yield
    except DeployError as error:
        gpu_models = sorted({spec.name for spec in store.specs(models) if any(g.kind == "gpu" for g in spec.instances)})
        if not gpu_models or Path("/dev/nvidiactl").exists():
            raise
        first, *rest = str(error).split("\n", 1)
        hint = (f"{', '.join(gpu_models)} asks for GPU instances and this machine has no NVIDIA GPU: package it again "
                "with `--instances cpu:1` (or declare mfn.Instances(kind=\"auto\"), which takes a GPU where there is one)")
        raise DeployError("\n".join([f"{first.rstrip('; ')}; {hint}", *filter(None, rest)])) from None


def _body_limit(store: Store, models: list[str], requested: int) -> int:
    """The deployment's body limit: what was asked for, or more where a model's full batch needs it (the servers
    that have a setting for it apply it; clients check it before sending)."""
    from mfn.runtime.codec.limits import body_limit

    return max([requested, *(body_limit(spec) for spec in store.specs(models))])


def _response_cache_bytes(store: Store) -> int | None:
    """Triton's response cache, from the specs this process has read already (see Plan.response_cache_bytes)."""
    if store.server != Server.TRITON:
        return None
    from mfn.model_repository.render import response_cache_bytes

    return response_cache_bytes(store.specs())


def _deploy_locked(store: Store, path: Path, name: str, chosen: list[str], options: DeployOptions) -> Deployment:
    _claim_name(name)
    workdir = state.work_dir(name)
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True, mode=0o700)  # keys, logs and configs: the user's alone
    from mfn.local import supervision

    plan = supervision.Plan(
        name=name,
        path=str(path.resolve()),
        server=store.server,
        models=chosen,
        options=replace(options, max_request_bytes=_body_limit(store, chosen, options.max_request_bytes)),
        shm_prefix=new_shm_prefix() if local_server(store.server).USES_SHARED_MEMORY else "",
        response_cache_bytes=_response_cache_bytes(store),
    )
    try:
        deployment = supervision.spawn(plan, workdir)
    except BaseException:
        with interrupts_held():
            if state.load(name) is not None:
                _undeploy_locked(name)
            remove_shm_regions(plan.shm_prefix)
            shutil.rmtree(workdir, ignore_errors=True)
        raise
    return deployment


def _monitor(deployment: Deployment) -> None:
    """Start the deployment's own Prometheus; the deployment goes if it cannot (the caller holds its lock)."""
    try:
        from mfn.monitoring.local import start_prometheus

        step(f"Prometheus at {start_prometheus(deployment)}")
    except BaseException:
        _undeploy_locked(deployment.name)
        raise


def deploy_like(template: str, path: Path | str, name: str, track_of: str | None = None) -> Deployment:
    """Deploy `path` as `name` with the options deployment `template` was started with (auth, host, timeouts,
    body limit, heap), on free ports and without an idle timeout: a rollout's canary track, or the primary track
    started again from the promoted package (the template then being `name` itself, replaced in place). A canary
    track names the deployment whose rollout it serves in `track_of`.

    Raises:
        DeployError, MfnError: as `deploy`; the template's own deployment is left as it was when `name` differs.
    """
    import json

    from mfn.local.supervision import PLAN_FILE, Plan

    plan = Plan.from_json(json.loads((Path(state.get(template).workdir) / PLAN_FILE).read_text()))
    store = discover(Path(path))
    from mfn.signing import prepare_for_serving

    prepare_for_serving([unit for model in store.models for unit in store.models[model]])
    if store.server != plan.server:
        raise MfnError(f"{path} is packaged for {store.server}, while {template} runs {plan.server}: "
                       f"package it with --server {plan.server}")
    with locking.exclusive(name):
        if name == template:
            with interrupts_held():
                _undeploy_locked(name, keep_route=True)
        # Not while interrupts are held: signals ignored here would stay ignored in the servers started below.
        return _deploy_locked(store, Path(path), name, list(store.models),
                              replace(plan.options, ports={}, idle_timeout_s=None, track_of=track_of))


def undeploy(name: str) -> Deployment:
    """Drain and stop a deployment's server, remove its shared-memory regions, work directory and record.

    The supervisor drains (requests already accepted are answered) within the deployment's drain timeout;
    whatever still runs after that and a short grace is killed.
    """
    with locking.exclusive(name), interrupts_held():
        return _undeploy_locked(name)


def _undeploy_locked(name: str, keep_route: bool = False) -> Deployment:
    """Stop `name`; with its route (the rollout proxy, and the canary track a rollout left), unless `keep_route`."""
    from mfn.proxy import routes
    from mfn.local.supervision import read_status
    from mfn.monitoring.local import stop_prometheus

    deployment = state.get(name)
    if not keep_route:
        canary = routes.stop(name)
        if canary is not None:
            with locking.exclusive(canary):
                if state.load(canary) is not None:  # an abort may have stopped it meanwhile
                    _undeploy_locked(canary)
    stop_prometheus(deployment)
    drain_s = deployment.drain_timeout_s if deployment.drain_timeout_s is not None else DRAIN_TIMEOUT_S
    stop_process_group(deployment.pid, deployment.start_time, grace_s=drain_s + STOP_GRACE_S)
    # A supervisor killed outright leaves its server to the kernel's SIGTERM; make sure it is gone.
    status = read_status(deployment)
    if status.server_pid:
        stop_process_group(status.server_pid, status.server_start_time, grace_s=STOP_GRACE_S)
    _forget(deployment)
    return deployment


def undeploy_all() -> list[Deployment]:
    # A deployment's undeploy also stops its rollout's canary track, which is then gone from the list.
    stopped = []
    for deployment in state.all_deployments():
        with locking.exclusive(deployment.name), interrupts_held():
            if state.load(deployment.name) is not None:
                stopped.append(_undeploy_locked(deployment.name))
    return stopped


def callers_key(name: str) -> str | None:
    """The key callers of deployment `name` present: the proxy's own where one fronts it, else the server's inference
    key; None where inference is open."""
    from mfn.proxy import routes

    deployment = state.get(name)
    route = routes.with_proxy(deployment)
    return routes.callers_key(route) if route is not None else state.read_key(deployment, "inference")


def public_url(name: str) -> str:
    """Where deployment `name` takes HTTP requests: its proxy, its idle front or its server."""
    from mfn.proxy import routes

    deployment = state.get(name)
    routes.with_proxy(deployment)
    return deployment.endpoints()["http"]


def status() -> list[Deployment]:
    """Every local deployment, with its rollout proxy's endpoints where it has one."""
    from mfn.proxy import routes

    deployments = state.all_deployments()
    for deployment in deployments:
        routes.with_proxy(deployment)
    return deployments


def describe(deployment: Deployment, status: SupervisorStatus, versions: dict[str, dict] | None = None) -> str:
    """Several lines on one deployment for `mfn status`: state, restarts, last exit, endpoints, model health, and
    with `versions` (see mfn.local.operations.versions_of) each model's served and default versions."""
    current = status.state if deployment.running else f"stopped (was {status.state})"
    woken = f", woken {_times(status.wakes)} (last in {_seconds(status.last_wake_s)})" if status.wakes else ""
    lines = [(f"{deployment.name} ({deployment.server}, supervisor pid {deployment.pid}, {current}, "
              f"{_counted(status.restarts, 'restart')}{woken})")]
    if status.last_exit:
        lines.append(f"  last exit: {status.last_exit}")
    endpoints = deployment.endpoints()
    width = max(map(len, endpoints)) + 1  # "prometheus" is longer than the others
    lines += [f"  {protocol:{width}} {url}" for protocol, url in endpoints.items()]
    for model in deployment.models:
        health = status.models.get(model)
        if health is not None:
            detail = f": {health.detail}" if health.detail else ""
            served = (versions or {}).get(model)
            listed = ""
            if served and served["versions"]:
                listed = ", " + ", ".join(f"v{version}" for version in served["versions"])
                listed += f" (default v{served['default_version']})" if served["default_version"] is not None else ""
            lines.append(f"  model {model}: {health.health}{listed}, {_counted(health.reloads, 'reload')}{detail}")
    return "\n".join(lines)


def _counted(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _times(number: int) -> str:
    return {1: "once", 2: "twice"}.get(number, f"{number} times")


def _seconds(value: float | None) -> str:
    """A duration as people read it: 0.5 s, 3.2 s, 42 s."""
    if value is None:
        return "-"
    return f"{value:.1f} s" if value < 10 else f"{value:.0f} s"


def wait_until_stopped(deployment: Deployment) -> None:
    """Block while the server runs (for --foreground)."""
    while deployment.running:
        time.sleep(0.5)


def _forget(deployment: Deployment) -> None:
    remove_shm_regions(deployment.shm_prefix)
    shutil.rmtree(state.inside_home(Path(deployment.workdir)), ignore_errors=True)
    state.remove(deployment.name)


def _claim_name(name: str) -> None:
    existing = state.load(name)
    if existing is None:
        return
    if existing.running:
        raise DeployError(f"deployment {name!r} is already running; `mfn undeploy {name}` first, or pass --name")
    _undeploy_locked(name)
