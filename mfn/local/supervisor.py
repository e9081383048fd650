"""The owner of one local deployment's server: starts it, keeps its models answering, restarts it, drains it.

`mfn deploy` spawns one supervisor per deployment (`python -m mfn.local.supervisor PLAN`) and reads its
progress from a pipe until the models are loaded. From then on the supervisor

- restarts a server that dies, for good (see `Supervisor._recover`), on the same ports, with its models loaded
  before the ports open, after killing what is left of the old process group and removing its shared memory;
  stops an idle one and wakes it on the next request (mfn.local.idling);
- reloads a model whose worker died (Triton's Python stubs) or that the server says is not ready, none while it is unresponsive;
- records its view in `status.json` beside the server log: state, restarts, the last exit and why (see
  mfn.servers.process.ExitWatch), crashes in a row, the next attempt, per-model health;
- starts the controller of the deployment's rollout proxy again if it is not running (mfn.proxy.routes);
- carries out operator requests (load, unload, reload, scale, set-default; see mfn.local.commands) between its
  health checks, and applies them again after a restart;
- on SIGTERM (`mfn undeploy`) lets the server finish the requests it has accepted, within the drain timeout.

The server is started with PR_SET_PDEATHSIG, so it cannot outlive its supervisor.

Why not supervisord: restarting is the small part. After a restart the models must be loaded through the
server's API, dead Triton stubs are only visible as zombie children of the server, and shared memory must be
cleaned between runs; none of that fits supervisord's programs, so it would only add a second daemon and a
config format beside the loop below.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import replace
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from mfn import process_log, progress
from mfn.progress import step
from mfn.polling import poll
from mfn.local import locking, state, supervision
from mfn.proxy import routes
from mfn.local.launching import log_tail, make_shm_regions_private, remove_shm_regions, wait_ports_released, with_progress
from mfn.local.idling import FRONTED, Idling
from mfn.local.commands import Operation, carry_out, has_requests, restore, serve_requests
from mfn.local.servers import LocalServer, local_server
from mfn.local.supervision import Health, ModelHealth, Plan, RestartPace, ServerState, Status, report, stop_reporting, write_status
from mfn.store import Store, discover
from mfn.local.versions import VersionChoices, serve
from mfn.runtime import cold_start
from mfn.local.state import Deployment
from mfn.errors import MfnError
from mfn.servers.process import ExitWatch, process_start_time, rotate_log, stop_process_group
from mfn.kinds import Server

WATCH_INTERVAL_S = 0.5
_log = logging.getLogger(__name__).info
READY_TIMEOUT_S = 120.0
KILL_GRACE_S = 5.0
PARALLEL_LOADS = 4


class Supervisor:
    """Runs one deployment's server for as long as the deployment exists."""

    def __init__(self, plan: Plan, workdir: Path) -> None:
        self.plan = plan
        self.workdir = workdir
        self.store: Store = discover(Path(plan.path))
        self.server: LocalServer = local_server(plan.server)
        self.models = list(plan.models)  # what it serves now: the plan's, changed by operator requests
        self.replay: list[Operation] = []  # `mfn scale` requests, applied again after a restart
        self.choices: dict[str, VersionChoices] = {}  # the operator's version choices (mfn.local.versions) by model
        self.status = Status(models={model: ModelHealth() for model in plan.models})
        self.deployment: Deployment | None = None
        self.process: subprocess.Popen | None = None
        self.exits: ExitWatch | None = None
        self.pace = RestartPace(self.status, plan.restart_backoff_cap_s)
        self.stubs: dict[int, str] = {}
        self.retired: set[int] = set()
        self.stop_requested = False
        self.idling = Idling(self, plan.options.idle_timeout_s, plan.options.load_timeout_s + READY_TIMEOUT_S) if plan.options.idle_timeout_s else None

    def start(self) -> Deployment:
        """Start the server and load every model; the first deployment record is written here."""
        phases_dir = self.workdir / "cold_start"
        phases_dir.mkdir(exist_ok=True)
        os.environ[cold_start.ENV] = str(phases_dir)  # the server's model processes inherit it
        started = time.monotonic()
        server_ports, front_ports = self.plan.options.ports, {}
        if self.idling is not None:  # the front takes the public ports; the server gets free ones
            front_ports = self.idling.open_front(self.plan.options.host, self.plan.options.ports)
            server_ports = {key: port for key, port in self.plan.options.ports.items() if key not in FRONTED}
        supervision.load_in_background()  # what loading models needs, while the server starts
        deployment = self._start_server(ports=server_ports)
        self.plan = replace(self.plan, response_cache_bytes=None)  # later starts read the specs as they are then
        deployment.front = front_ports
        deployment.cold_start = {"server_start_s": round(time.monotonic() - started, 3), "models": {}}
        deployment.drain_timeout_s, deployment.load_timeout_s = self.plan.options.drain_timeout_s, self.plan.options.load_timeout_s
        deployment.track_of = self.plan.options.track_of
        if self.plan.server == Server.TORCHSERVE:  # tritonserver 2.51 has no body limit to report
            deployment.max_request_bytes = self.plan.options.max_request_bytes
        state.save(deployment)
        # Models load side by side (a load is mostly a process start and imports); the record keeps the plan's order.
        with ThreadPoolExecutor(min(PARALLEL_LOADS, len(self.plan.models) or 1)) as pool:
            loads = {pool.submit(self._first_load, model, phases_dir): model for model in self.plan.models}
            for done in as_completed(loads):
                model = loads[done]
                split = done.result()  # the first failure ends the deploy (the server is then stopped)
                deployment.cold_start["models"][model] = split
                deployment.models = [name for name in self.plan.models if name in deployment.cold_start["models"]]
                state.save(deployment)
                self._model(model, Health.READY)
                step(f"{model} ready ({cold_start.describe(split)})")
        self._reload_dead_workers()  # learns each live worker's model before anyone can kill it
        make_shm_regions_private(self.plan.shm_prefix)
        self.status.state = ServerState.RUNNING
        self.pace.serving()
        self.save_status()
        if self.idling is not None and self.idling.front is not None:  # idle time counts from now, not from loading
            self.idling.front.touch()
        return deployment

    def _first_load(self, model: str, phases_dir: Path) -> dict[str, float]:
        """Load one model of the plan; its cold-start split (see mfn.runtime.cold_start)."""
        step(f"loading {model} ...")
        started = time.monotonic()
        try:
            with_progress(lambda: serve(self, model),
                          f"{model}: still loading", self.plan.options.load_timeout_s)
        except MfnError:
            if time.monotonic() - started < self.plan.options.load_timeout_s:
                raise
            raise MfnError(f"{model} did not finish loading within {self.plan.options.load_timeout_s:g} s (--load-timeout): "
                           f"its setup() may need longer; deploy again with a larger --load-timeout") from None
        return cold_start.split(time.monotonic() - started, cold_start.read(phases_dir, model))

    def watch(self) -> None:  # noqa: C901
        """Keep the server and its models up until a stop is requested or the server can no longer start."""
        next_health = time.monotonic() + self.plan.health_interval_s
        while not self.stop_requested:
            assert self.process is not None
            if self.idling is not None and self.idling.asleep:
                if self.idling.wake_requested.wait(WATCH_INTERVAL_S) or has_requests(self.workdir):
                    self.idling.wake()
                    next_health = time.monotonic() + self.plan.health_interval_s
                continue
            if self.process.poll() is not None:
                if not self._recover():
                    return
                continue
            assert self.exits is not None
            self.exits.forget_ended()
            if self.pace.ran_healthy():
                self.save_status()
            serve_requests(self.workdir, self._carry_out)
            if self.status.unresponsive_since is None:  # a reload could not get through; dead stubs stay zombies till then
                self._reload_dead_workers()
            make_shm_regions_private(self.plan.shm_prefix)  # new stubs make new regions
            if time.monotonic() >= next_health:
                self._check_health()
                if self.deployment is not None:
                    rotate_log(Path(self.deployment.log_file))
                next_health = time.monotonic() + self.plan.health_interval_s
            if self.idling is not None and self.idling.due():
                self.idling.sleep()
                continue
            time.sleep(WATCH_INTERVAL_S)

    def drain_and_stop(self, final_state: ServerState = ServerState.STOPPED, drain: bool = True) -> None:
        """Let the server answer what it has accepted (SIGTERM, within the drain timeout), then stop it; at once
        without `drain`."""
        process = self.process
        if process is not None and process.poll() is None:
            if drain and self.deployment is not None:
                self.status.state = ServerState.DRAINING
                self.save_status()
                self.server.drain(self.deployment, process, self.plan.options.drain_timeout_s)
            stop_process_group(process.pid, None, grace_s=0.0)  # stubs or workers may outlive the server's exit
            process.wait()
        remove_shm_regions(self.plan.shm_prefix)
        self.status.state = final_state
        self.status.server_pid = self.status.next_attempt_at = None
        self.save_status()

    def _start_server(self, ports: dict[str, int] | None, preload: Sequence[str] = ()) -> Deployment:
        deployment, process = self.server.start(self.plan.with_ports(ports), self.store, self.workdir, preload)
        self.process = process
        if self.exits is not None:
            self.exits.close()
        self.exits = ExitWatch(process)
        self.exits.watch_tree()  # live: TorchServe's Java runs below its launchers by now
        self.stubs, self.retired = {}, set()
        self.status.unresponsive_since = None
        self.status.server_pid = process.pid
        self.status.server_start_time = process_start_time(process.pid)
        self.save_status()
        if self.deployment is not None:  # a restart keeps the first record; a wake-up moves ports
            if deployment.ports != self.deployment.ports:
                self.deployment.ports = deployment.ports
                state.save(self.deployment)
            deployment = self.deployment
        self.deployment = deployment
        return deployment

    def _recover(self) -> bool:
        """Start a server in place of the dead one, again until one serves, at the pace RestartPace sets; False
        once the deployment is 'failed'."""
        end, became_live = self._bury(), True
        while (delay := self.pace.ended(end, became_live)) is not None:
            for model in self.models:
                self._model(model, Health.UNAVAILABLE, f"server {end}")
            self.save_status()
            _log(f"{self.plan.server}: {self.status.last_exit}")
            if self._sleep(delay):
                return True
            previous = self.process
            problem = self.bring_back("restart")
            if not problem:
                self.pace.restarted()
                self.save_status()
                return True
            if self.stop_requested:
                return True
            became_live = self.process is not previous  # launch() hands over only a server that answered as live
            end = problem if became_live else f"restart failed: {problem}"
        self.save_status()
        return False

    def bring_back(self, why: str, keep_ports: Iterable[str] | None = None) -> str:
        """Start the server again with the current models loaded and the operator's requests replayed (after a
        crash, or to wake it); the reason it could not, or "" once every model is ready. It keeps its ports, or
        only `keep_ports` (the others are chosen afresh)."""
        assert self.deployment is not None
        ports = {name: port for name, port in self.deployment.ports.items() if keep_ports is None or name in keep_ports}
        wait_ports_released(self.plan.options.host, ports)
        try:
            self._start_server(ports=ports, preload=self.models)
        except MfnError as error:
            _log(f"the {why} failed: {error}")
            if self.process is not None and self.process.poll() is None:
                stop_process_group(self.process.pid, process_start_time(self.process.pid), grace_s=KILL_GRACE_S)
                self.process.wait()
            return str(error).splitlines()[0].rstrip(":")
        if not self._wait_ready():
            return f"{self._bury()} before its models were ready"
        restore(self, why)
        self._reload_dead_workers()
        _log(f"{self.plan.server} started ({why}); {', '.join(self.models)} loaded")
        self.pace.serving()
        return ""

    def _bury(self) -> str:
        """How the ended server ended, read before what it left in its process group (stubs, workers) is killed;
        its shared memory is freed too."""
        assert self.process is not None and self.exits is not None and self.exits.process is self.process
        end = self.exits.reason()
        stop_process_group(self.process.pid, None, grace_s=0.0)
        remove_shm_regions(self.plan.shm_prefix)
        return end

    def _reload_dead_workers(self) -> None:
        assert self.process is not None and self.deployment is not None
        dead = set()
        for pid, (model, alive) in self._workers().items():
            if pid in self.retired:
                continue
            if alive:
                self.stubs[pid] = model
            elif pid in self.stubs:
                dead.add(self.stubs.pop(pid))
        for model in sorted(dead):
            self._reload(model, "its worker process died")

    def _workers(self) -> dict[int, tuple[str, bool]]:
        assert self.process is not None and self.deployment is not None
        return self.server.worker_processes(self.deployment, self.process.pid)

    def _reload(self, model: str, why: str) -> None:
        """Reload `model` and record what the server says afterwards."""
        assert self.deployment is not None
        _log(f"{model}: {why}; reloading")
        self.retire(model)
        self.status.models[model].reloads += 1
        self._model(model, Health.RELOADING, why)
        try:
            self.server.reload_model(self.deployment, self.store, model)
        except MfnError as error:
            self._model(model, Health.UNAVAILABLE, str(error).splitlines()[0])
            return
        self.record_health(model)

    def retire(self, model: str) -> None:
        """Workers of `model` end during a reload, unload or scale-down: their ends are not new deaths."""
        self.retired |= {pid for pid, name in self.stubs.items() if name == model}
        self.retired |= {pid for pid, (name, _) in self._workers().items() if name == model}
        self.stubs = {pid: name for pid, name in self.stubs.items() if name != model}

    def _carry_out(self, operation: Operation, remember: bool = True) -> dict:
        return carry_out(self, operation, remember)

    def _check_health(self) -> None:
        """Reload a model the server says is not ready; while it does not answer at all, nothing (see model_problems)."""
        assert self.deployment is not None
        problems = supervision.model_problems(self.server, self.deployment, self.plan.server, self.models)
        if note := self.status.record_answering(problems is not None):
            _log(f"{self.plan.server} {note}")
        self.save_status()
        for model, problem in (problems or {}).items():
            self._model(model, Health.READY if problem is None else Health.UNAVAILABLE, problem or "")
            if problem is not None:
                self._reload(model, "the server says it is not ready")
        try:  # the rollout proxy in front of this deployment, if it has one, is kept running too
            if routes.ensure_controller(self.plan.name):
                _log("the rollout proxy's controller was not running: started it again")
        except MfnError as error:
            _log(f"the rollout proxy's controller did not start: {error}")

    def _wait_ready(self) -> bool:
        """Wait for the preloaded models' workers (TorchServe starts them after opening its ports), READY_TIMEOUT_S
        for all of them, as the server loads them side by side; False as soon as the server has ended."""
        assert self.process is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        for model in self.models:
            while (self.process.poll() is None and time.monotonic() < deadline and not self.stop_requested
                   and self.record_health(model) is not None):
                time.sleep(WATCH_INTERVAL_S)
        return self.process.poll() is None

    def record_health(self, model: str) -> str | None:
        assert self.deployment is not None
        problem = self.server.model_problem(self.deployment, model)
        self._model(model, Health.READY if problem is None else Health.UNAVAILABLE, problem or "")
        return problem

    def _model(self, model: str, health: str, detail: str = "") -> None:
        entry = self.status.models[model]
        if (entry.health, entry.detail) != (health, detail):
            entry.health, entry.detail = health, detail
            self.save_status()

    def save_status(self) -> None:
        write_status(self.workdir, self.status)

    def _sleep(self, seconds: float) -> bool:
        """Sleep unless a stop is requested meanwhile; True when it was."""
        poll(lambda: self.stop_requested, seconds, every_s=0.1)
        return self.stop_requested


def main(plan_file: str) -> int:
    """Run a supervisor for the plan in `plan_file` (written by `spawn`)."""
    process_log.configure()
    supervision.raise_open_file_limit()
    plan = Plan.from_json(json.loads(Path(plan_file).read_text()))
    workdir = Path(plan_file).parent
    supervisor = Supervisor(plan, workdir)

    def request_stop(signum: int, frame: object) -> None:
        supervisor.stop_requested = True

    try:
        return _supervise(supervisor, request_stop)
    finally:
        if supervisor.idling is not None:
            supervisor.idling.close()


def _supervise(supervisor: Supervisor, request_stop) -> int:
    try:
        with progress.shown_by(lambda message: report("progress", message)):  # to the waiting `mfn deploy`
            supervisor.start()
    except (MfnError, OSError) as error:
        # Nobody was told it is ready; a drain would wait for a model still loading (Triton finishes a load first).
        supervisor.drain_and_stop(drain=False)
        report("failed", str(error))
        return 1
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    locking.give_up_when(lambda: supervisor.stop_requested)  # an undeploy holds the lock while it stops us
    report("ready")
    stop_reporting()
    try:
        supervisor.watch()
    except Exception as error:  # noqa: BLE001 - a fault in the supervisor itself: stop the server cleanly, say why
        _log(f"supervisor fault: {error!r}")
        supervisor.status.state = ServerState.FAILED
        supervisor.status.last_exit = f"supervisor fault: {error!r}"
    if supervisor.status.state == ServerState.FAILED:
        _log(f"giving up: {supervisor.status.last_exit}\n{log_tail(supervisor.deployment) if supervisor.deployment else ''}")
        supervisor.drain_and_stop(final_state=ServerState.FAILED)
        return 1
    supervisor.drain_and_stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
