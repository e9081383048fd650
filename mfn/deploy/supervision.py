"""The deployer's side of a supervisor (see mfn.deploy.supervisor): the plan it is given, the status it writes
back, and starting one and waiting until its models have loaded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mfn.deploy import state
from mfn.deploy.launching import DRAIN_TIMEOUT_S, LOAD_TIMEOUT_S, STOP_GRACE_S, Progress, interrupts_held
from mfn.deploy.state import Deployment
from mfn.errors import DeployError
from mfn.runtime.codec.limits import MAX_BODY_BYTES
from mfn.servers.process import exit_reason

PLAN_FILE = "plan.json"
STATUS_FILE = "status.json"
LOG_FILE = "supervisor.log"

@dataclass(frozen=True)
class Plan:
    """What `mfn deploy` asks of a supervisor."""

    name: str
    path: str
    server: str
    models: list[str]
    auth: bool
    drain_timeout_s: float = DRAIN_TIMEOUT_S
    max_request_bytes: int = MAX_BODY_BYTES
    shm_prefix: str = ""
    jvm_heap_mb: int | None = None
    host: str = "127.0.0.1"
    ports: dict[str, int] = field(default_factory=dict)  # fixed ones; free ports for the rest
    load_timeout_s: float = LOAD_TIMEOUT_S
    idle_timeout_s: float | None = None  # stop the server after this long idle; the front wakes it (mfn.deploy.idling)


@dataclass
class ModelHealth:
    """One model as the supervisor last saw it."""

    health: str = "loading"  # loading | ready | reloading | unavailable
    reloads: int = 0
    detail: str = ""


@dataclass
class Status:
    """The supervisor's view of its deployment, written to status.json for `mfn status`."""

    state: str = "starting"  # starting | running | restarting | draining | idle | waking | failed | stopped
    server_pid: int | None = None
    server_start_time: int | None = None
    restarts: int = 0
    last_exit: str = ""
    models: dict[str, ModelHealth] = field(default_factory=dict)
    wakes: int = 0  # times an idle server was started again by a request
    last_wake_s: float | None = None  # the last wake-up: request held -> every model ready

    def to_json(self) -> dict:
        return asdict(self)


def read_status(deployment: Deployment) -> Status:
    """The deployment's last written status; an empty one when the supervisor has written none."""
    try:
        raw = json.loads((Path(deployment.workdir) / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return Status(state="unknown")
    models = {name: ModelHealth(**health) for name, health in raw.pop("models", {}).items()}
    return Status(**raw, models=models)


def spawn(plan: Plan, workdir: Path, progress: Progress) -> Deployment:
    """Start a supervisor for `plan` and wait until it has loaded every model.

    Raises:
        DeployError: with the server's reason when the server or a model failed; nothing is left running.
    """
    plan_file = workdir / PLAN_FILE
    plan_file.write_text(json.dumps(asdict(plan), indent=2))
    with open(workdir / LOG_FILE, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "mfn.deploy.supervisor", str(plan_file)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            start_new_session=True,
        )
    assert process.stdout is not None
    try:
        for raw in process.stdout:
            kind, _, text = raw.decode().rstrip("\n").partition(" ")
            if kind == "progress":
                progress(json.loads(text))
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
            progress(f"interrupted: stopping {plan.name} (at most {STOP_GRACE_S:g} s) ...")
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
