"""The deployer's side of a supervisor (see mfn.local.supervisor): the plan it is given, the status it writes
back, how long it waits between restarts, what it counts as a server that answers, and starting one and waiting
until its models have loaded (both ends of the pipe it reports on)."""

from __future__ import annotations

import importlib
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

from mfn.files import write_json
from mfn.local import state
from mfn.local.launching import DRAIN_TIMEOUT_S, LOAD_TIMEOUT_S, STOP_GRACE_S, interrupts_held
from mfn.progress import step
from mfn.local.state import Deployment
from mfn.errors import DeployError, MfnError
from mfn.kinds import StrEnum
from mfn.sizes import MAX_BODY_BYTES
from mfn.servers.http import request
from mfn.servers.process import PRIVATE_UMASK, exit_reason

if TYPE_CHECKING:
    from mfn.local.servers import LocalServer

PLAN_FILE = "plan.json"
STATUS_FILE = "status.json"
LOG_FILE = "supervisor.log"
RESTART_BACKOFF_S = 1.0  # before the second restart in a row; doubled for each further one, up to the plan's cap
RESTART_BACKOFF_CAP_S = 30.0
HEALTHY_AFTER_S = 30.0  # a server that served this long ends a run of crashes: its next end is restarted at once
DEAD_STARTS_FAILED = 10  # restarts in a row that never became live: the deployment is 'failed'
HEALTH_INTERVAL_S = 5.0
# Longer than this to answer a cheap request, and the server counts as not answering: the check is about whether
# anything gets through, and a wrong "unresponsive" only postpones a reload to the next check.
ANSWER_TIMEOUT_S = 2.0
# Per server kind, a GET that shows whether the server answers at all, on the port its model checks use (TorchServe's
# are on its management port): (port name, path, the key it is sent with, if any).
ANSWER_PROBES = {
    "triton": ("http", "/v2/health/live", None),
    "torchserve": ("management", "/models?limit=1", "management"),
}


@dataclass(frozen=True)
class DeployOptions:
    """How a deployment's server runs: what `mfn deploy` takes beyond the package and its models, kept in the plan
    so a rollout's tracks and a promoted primary start the same way."""

    auth: bool = True
    drain_timeout_s: float = DRAIN_TIMEOUT_S
    max_request_bytes: int = MAX_BODY_BYTES
    jvm_heap_mb: int | None = None  # TorchServe's frontend heap
    host: str = "127.0.0.1"
    ports: dict[str, int] = field(default_factory=dict)  # fixed ones; free ports for the rest
    load_timeout_s: float = LOAD_TIMEOUT_S
    idle_timeout_s: float | None = None  # stop the server after this long idle; the front wakes it (mfn.local.idling)
    track_of: str | None = None  # a rollout's canary track: the deployment whose rollout it serves (mfn.proxy.rollout)


@dataclass(frozen=True)
class Plan:
    """What `mfn deploy` asks of a supervisor."""

    name: str
    path: str
    server: str
    models: list[str]
    options: DeployOptions = field(default_factory=DeployOptions)
    shm_prefix: str = ""
    restart_backoff_cap_s: float = RESTART_BACKOFF_CAP_S  # the longest wait between restarts in a row
    health_interval_s: float = HEALTH_INTERVAL_S  # between checks that the server answers and its models are ready
    # Triton's response cache for the first start, worked out from the specs by the deploying process: the
    # supervisor then starts the server before it loads the handler contract (later starts read the specs).
    response_cache_bytes: int | None = None

    def with_ports(self, ports: dict[str, int] | None) -> Plan:
        return replace(self, options=replace(self.options, ports=dict(ports or {})))

    @classmethod
    def from_json(cls, document: dict) -> Plan:
        """A plan as `spawn` wrote it, or as an older mfn did (the options then at its top level)."""
        options = document.pop("options", None)
        if options is None:
            options = {name: document.pop(name) for name in [f.name for f in fields(DeployOptions)] if name in document}
        return cls(**document, options=DeployOptions(**options))


# What loading and serving models needs beyond starting the server (the handler contract, specs, versions).
_FOR_LOADING = ("mfn.spec", "mfn.archiver.reading", "mfn.model_repository.render", "mfn.local.versions")


def load_in_background() -> None:
    """Import what loading models needs on a thread, so that it loads while the server starts rather than before."""
    def load() -> None:
        for module in _FOR_LOADING:
            importlib.import_module(module)

    threading.Thread(target=load, name="mfn-imports", daemon=True).start()


class ServerState(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    RESTARTING = "restarting"
    DRAINING = "draining"
    IDLE = "idle"
    WAKING = "waking"
    FAILED = "failed"
    STOPPED = "stopped"


class Health(StrEnum):
    LOADING = "loading"
    READY = "ready"
    RELOADING = "reloading"
    UNAVAILABLE = "unavailable"
    UNRESPONSIVE = "unresponsive"  # the whole server did not answer


@dataclass
class ModelHealth:
    """One model as the supervisor last saw it."""

    health: str = Health.LOADING  # a Health (a plain string once read back from status.json)
    reloads: int = 0
    detail: str = ""


@dataclass
class Status:
    """The supervisor's view of its deployment, written to status.json for `mfn status`."""

    state: str = ServerState.STARTING  # a ServerState (a plain string once read back from status.json)
    server_pid: int | None = None
    server_start_time: int | None = None
    restarts: int = 0
    last_exit: str = ""  # the last end or failed start, with the crashes in a row and when the next attempt is
    crashes_in_a_row: int = 0  # ends and failed starts with no healthy run between (see RestartPace)
    next_attempt_at: float | None = None  # while restarting: when the next start begins (seconds since the epoch)
    models: dict[str, ModelHealth] = field(default_factory=dict)
    wakes: int = 0  # times an idle server was started again by a request
    last_wake_s: float | None = None  # the last wake-up: request held -> every model ready
    # Since when the running server has not answered its health checks (seconds since the epoch), None while it
    # answers; how many checks it did not answer in all. Overload, not a crash: nothing is reloaded meanwhile.
    unresponsive_since: float | None = None
    unresponsive_checks: int = 0

    def to_json(self) -> dict:
        return asdict(self)

    def record_answering(self, answering: bool) -> str:
        """Note whether the server answered a health check (unresponsive_since, unresponsive_checks, and while it
        does not, every model's health); what changed, in words, or "" when nothing did."""
        since = self.unresponsive_since
        if answering:
            self.unresponsive_since = None
            return "" if since is None else f"answers again, after {time.time() - since:.1f} s"
        note = ""
        if since is None:
            since = self.unresponsive_since = time.time()
            note = (f"did not answer within {ANSWER_TIMEOUT_S:g} s (overloaded, or out of file descriptors?): no model "
                    "is reloaded until it answers")
        self.unresponsive_checks += 1
        detail = f"the server has not answered since {time.strftime('%H:%M:%S', time.localtime(since))}; not reloaded"
        for health in self.models.values():
            health.health, health.detail = Health.UNRESPONSIVE, detail
        return note

    def record_end(self, end: str, ended_at: float, note: str = "") -> None:
        """Put the server's last end in `last_exit`: how and when, the crashes in a row, and `note` (what comes next)."""
        parts = [f"{end} at {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(ended_at))}"]
        if self.crashes_in_a_row > 1:
            parts.append(f"{self.crashes_in_a_row} crashes in a row")
        self.last_exit = "; ".join([*parts, note] if note else parts)


class RestartPace:
    """When the supervisor starts a dead server again, and when it stops trying, told in the status it keeps.

    A crash is never final: a request that crashed the server can come again after each restart, and giving up
    would make it an outage that outlasts the requests. Crashes in a row (no HEALTHY_AFTER_S of serving between)
    only space restarts out: the first at once, so a server that was serving is back within mfn.Client's retry
    budget, then 1, 2, 4, ... s up to the plan's cap. 'failed' is kept for DEAD_STARTS_FAILED restarts in a row
    that never became live: no request can reach a server that never opened its ports, so the cause is around it
    (installation, model files, a port another process took, memory) and needs a person; the status says why.
    """

    def __init__(self, status: Status, cap_s: float) -> None:
        self.status = status
        self.cap_s = cap_s
        self.served_since: float | None = None  # when the running server had every model loaded (monotonic)
        self._dead_starts = 0
        self._end, self._ended_at = "", 0.0

    def serving(self) -> None:
        """Every model of the (re)started server is loaded: its run starts now."""
        self.served_since = time.monotonic()

    def ran_healthy(self) -> bool:
        """While the server runs: whether its run has just ended the crashes in a row (the status changed)."""
        if self.status.crashes_in_a_row and self._healthy():
            self.status.crashes_in_a_row = 0
            return True
        return False

    def ended(self, end: str, became_live: bool = True) -> float | None:
        """Count the server's end, or a restart that failed (`became_live` False where it never answered); the
        seconds to wait before the next start, or None when the deployment is 'failed'."""
        if self._healthy():
            self.status.crashes_in_a_row = 0
        self.served_since = None
        self._dead_starts = 0 if became_live else self._dead_starts + 1
        self.status.crashes_in_a_row += 1
        self._end, self._ended_at = end, time.time()
        if self._dead_starts >= DEAD_STARTS_FAILED:
            self.status.state, self.status.next_attempt_at = ServerState.FAILED, None
            self.status.record_end(end, self._ended_at, f"gave up: it did not become live in {self._dead_starts} "
                                                        "restarts in a row")
            return None
        delay = restart_delay_s(self.status.crashes_in_a_row, self.cap_s)
        self.status.state, self.status.next_attempt_at = ServerState.RESTARTING, self._ended_at + delay
        next_attempt = time.strftime("%H:%M:%S", time.localtime(self._ended_at + delay))
        self.status.record_end(end, self._ended_at, f"next attempt at {next_attempt}" if delay else "restarting at once")
        return delay

    def restarted(self) -> None:
        """A restart brought every model back."""
        self.status.restarts += 1
        self.status.state, self.status.next_attempt_at = ServerState.RUNNING, None
        self.status.record_end(self._end, self._ended_at)
        self.serving()

    def _healthy(self) -> bool:
        return self.served_since is not None and time.monotonic() - self.served_since >= HEALTHY_AFTER_S


def restart_delay_s(crashes_in_a_row: int, cap_s: float) -> float:
    """Seconds before a restart: none for the first crash in a row, then 1, 2, 4, ... up to `cap_s`."""
    if crashes_in_a_row <= 1:
        return 0.0
    return min(RESTART_BACKOFF_S * 2 ** min(crashes_in_a_row - 2, 16), cap_s)


def server_answers(deployment: Deployment, server: str, timeout_s: float = ANSWER_TIMEOUT_S) -> bool:
    """Whether a `server` ("triton", "torchserve") answers a request at all within `timeout_s`; any HTTP status counts."""
    port, path, key = ANSWER_PROBES[server]
    try:
        token = state.read_key(deployment, key) if key else None
    except MfnError:  # without its key a server still answers (it refuses), which is all this asks
        token = None
    code, _ = request("GET", f"http://{deployment.host}:{deployment.ports[port]}{path}", timeout_s,
                      headers={"Authorization": f"Bearer {token}"} if token else None)
    return code != 0


def model_problems(
    server: LocalServer, deployment: Deployment, kind: str, models: list[str]
) -> dict[str, str | None] | None:
    """What the server says of each model (why it cannot answer, or None when it is ready); None when the server
    does not answer. A failed model check counts only if the server answers right after it: one that timed out
    because the server stopped answering meanwhile says nothing about the model."""
    if not server_answers(deployment, kind):
        return None
    problems: dict[str, str | None] = {}
    for model in models:
        problems[model] = server.model_problem(deployment, model)
        if problems[model] is not None and not server_answers(deployment, kind):
            return None
    return problems


def raise_open_file_limit() -> None:
    """Raise this process's soft limit on open files to its hard limit, for the server it starts to inherit.

    Every connection holds a descriptor in the server, and idle connections cost any local process nothing to
    keep: at a soft limit of 1,024 (a common default) as many of them leave none for the next client, nor for the
    health check. The hard limit is as far as an unprivileged process may go.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (OSError, ValueError):
            pass  # a hard limit above the kernel's nr_open: the server runs with the soft limit, as it would anyway


def write_status(workdir: Path, status: Status) -> None:
    """Write status.json atomically, so `mfn status` never reads half of it."""
    write_json(workdir / STATUS_FILE, status.to_json())


def read_status(deployment: Deployment) -> Status:
    """The deployment's last written status; an empty one when the supervisor has written none."""
    try:
        raw = json.loads((Path(deployment.workdir) / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return Status(state="unknown")
    models = {name: ModelHealth(**health) for name, health in raw.pop("models", {}).items()}
    return Status(**raw, models=models)


def report(kind: str, text: str = "") -> None:
    """Tell `spawn`, from the supervisor: "progress" (a line), "ready", or "failed" (the reason)."""
    sys.stdout.write(f"{kind} {json.dumps(text)}\n" if text else f"{kind}\n")
    sys.stdout.flush()


def stop_reporting() -> None:
    """After `ready` nobody reads the pipe: send the supervisor's later output to its log instead."""
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())


def spawn(plan: Plan, workdir: Path) -> Deployment:
    """Start a supervisor for `plan` and wait until it has loaded every model, passing on its progress lines.

    Raises:
        DeployError: with the server's reason when the server or a model failed; nothing is left running.
    """
    plan_file = workdir / PLAN_FILE
    write_json(plan_file, asdict(plan))
    with os.fdopen(os.open(workdir / LOG_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as log:
        # Everything the supervisor writes (server configs, work directories) is its user's alone.
        process = subprocess.Popen(
            [sys.executable, "-m", "mfn.local.supervisor", str(plan_file)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            start_new_session=True,
            umask=PRIVATE_UMASK,
        )
    assert process.stdout is not None
    try:
        for raw in process.stdout:
            kind, _, text = raw.decode().rstrip("\n").partition(" ")
            if kind == "progress":
                step(json.loads(text))
            elif kind == "ready":
                process.stdout.close()
                return state.get(plan.name)
            elif kind == "failed":
                process.wait()
                raise DeployError(json.loads(text))
    except BaseException as error:
        # Interrupted (Ctrl-C) while the models load: the supervisor stops its server and ends before the
        # caller removes the work directory, so nothing writes there afterwards; if it does not end in time,
        # it is killed (its server dies with it).
        if isinstance(error, KeyboardInterrupt):
            step(f"interrupted: stopping {plan.name} (at most {STOP_GRACE_S:g} s) ...")
        with interrupts_held():
            process.terminate()
            try:
                process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        raise
    process.wait()
    log_text = (workdir / LOG_FILE).read_text(errors="replace")[-3000:]
    raise DeployError(f"the supervisor of {plan.name} ended ({exit_reason(process.returncode)}) before the models loaded:\n{log_text}")
