"""A deployment's route: the nginx proxy that owns its public endpoints once it has had a rollout, and the
rollout's record (mfn.proxy.rollout).

The route lives in the deployment's directory (`route/`, see mfn.local.state), beside the server's: a promotion
starts the deployment again from the new package, which gives it a new server directory, while the proxy and its
endpoints stay. The deployment's lock (mfn.local.locking) guards it too.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mfn.polling import poll
from mfn.files import private_dir, write_json
from mfn.local import locking, state
from mfn.errors import MfnError
from mfn.kinds import StrEnum
from mfn.servers.process import PRIVATE_UMASK, children, find_tool, is_running, process_start_time, start_detached

ROUTE_FILE = "route.json"
CONFIG_FILE = "nginx.conf"
KEY_FILE = "key_file.json"
START_TIMEOUT_S = 10.0
CONTROLLER_START_S = 15.0
# nginx's graceful stop (SIGQUIT) lets requests in flight finish; after this, the rest is cut.
STOP_GRACE_S = 30.0


class RolloutState(StrEnum):
    PROGRESSING = "progressing"
    PROMOTING = "promoting"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled back"


@dataclass
class Rollout:
    """One rollout of a deployment: what routes where, and how it ended."""

    strategy: str
    canary: str  # the canary track's deployment name
    path: str  # the new package
    weight: float = 0.0
    steps: list[float] = field(default_factory=list)
    step_interval_s: float = 30.0
    max_error_ratio: float | None = None
    max_p99_ms: float | None = None
    header: str | None = None
    header_value: str | None = None
    state: str = RolloutState.PROGRESSING  # a RolloutState (a plain string once read back from route.json)
    why: str = ""
    started_at: float = 0.0
    last_step_at: float = 0.0
    history: list[dict] = field(default_factory=list)
    # The controller's last comparison of the tracks over the current step's window (mfn.proxy.analysis).
    analysis: dict = field(default_factory=dict)


@dataclass
class Route:
    name: str
    server: str
    host: str
    ports: dict[str, int]  # the deployment's stable http and grpc ports, nginx's
    key_file: str  # the callers' key, in the servers' key-file layout (state.read_key)
    controller_pid: int = 0
    controller_start_time: int | None = None
    rollout: Rollout | None = None

    @property
    def directory(self) -> Path:
        return route_dir(self.name)

    @property
    def active(self) -> Rollout:
        """The rollout, for callers that know there is one (raises MfnError otherwise)."""
        if self.rollout is None:
            raise MfnError(f"{self.name} has had no rollout; start one with `mfn rollout start {self.name} PATH`")
        return self.rollout

    @property
    def controller_running(self) -> bool:
        # A killed controller whose parent (the command that started it) still runs stays a zombie until reaped.
        return (bool(self.controller_pid) and is_running(self.controller_pid, self.controller_start_time)
                and not _zombie(self.controller_pid))


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def route_dir(name: str) -> Path:
    return state.deployment_dir(name) / state.ROUTE_DIR


def get(name: str) -> Route:
    """The route of a deployment that has one (raises MfnError otherwise)."""
    route = load(name)
    if route is None:
        raise MfnError(f"{name} has no proxy in front of it")
    return route


def load(name: str) -> Route | None:
    try:
        document = json.loads((route_dir(name) / ROUTE_FILE).read_text())
    except FileNotFoundError:
        return None
    rollout = document.pop("rollout", None)
    return Route(**document, rollout=Rollout(**rollout) if rollout else None)


def save(route: Route) -> None:
    write_json(route.directory / ROUTE_FILE, asdict(route))


def create(name: str, server: str, host: str, ports: dict[str, int], with_key: bool) -> Route:
    """A new route's directory, its callers' key and record (no proxy runs yet)."""
    directory = route_dir(name)
    shutil.rmtree(directory, ignore_errors=True)
    private_dir(directory / "temp")
    key_file = directory / KEY_FILE
    write_json(key_file, {"inference": {"key": secrets.token_urlsafe(24)}} if with_key else {}, indent=None)
    route = Route(name=name, server=server, host=host, ports=ports, key_file=str(key_file))
    save(route)
    return route


def remove(name: str) -> None:
    shutil.rmtree(route_dir(name), ignore_errors=True)


def with_proxy(deployment: state.Deployment) -> Route | None:
    """The deployment's route, if it has one, with the proxy's ports put on the record for callers
    (`Deployment.proxy`, which `public_port` and `endpoints` prefer)."""
    route = load(deployment.name)
    if route is not None:
        deployment.proxy = dict(route.ports)
    return route


def callers_key(route: Route) -> str | None:
    return (json.loads(Path(route.key_file).read_text()).get("inference") or {}).get("key")


# The proxy process: nginx in the foreground, owned by the route's controller (mfn.proxy.controller).

def nginx_binary() -> str:
    return find_tool("nginx", "nginx is not installed: `make setup` puts Debian's nginx into the environment "
                              "(scripts/install_nginx.py), or install nginx 1.22 or newer on PATH")


def write_config(route: Route, text: str) -> Path:
    """The proxy's configuration, checked by nginx itself before it replaces the one in use."""
    path = route.directory / CONFIG_FILE
    candidate = route.directory / f".{CONFIG_FILE}.new"
    candidate.write_text(text)
    candidate.chmod(0o600)
    # The check opens the error log: created here, it would otherwise get this process's umask, not the proxy's 077.
    checked = subprocess.run([nginx_binary(), "-t", "-q", "-p", str(route.directory), "-c", str(candidate)],
                             capture_output=True, text=True, umask=PRIVATE_UMASK)
    if checked.returncode != 0:
        candidate.unlink(missing_ok=True)
        raise MfnError(f"nginx refused the rendered proxy configuration: {checked.stderr.strip()}")
    os.replace(candidate, path)
    return path


def stop_strays(route: Route) -> None:
    """Kill nginx processes left from this route's earlier proxy: workers outlive a master killed outright and
    keep its listening sockets. They are the nginx processes whose working directory is the route's."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if (os.readlink(proc / "cwd") == str(route.directory)
                    and (proc / "cmdline").read_bytes().startswith(b"nginx:")):
                os.kill(int(proc.name), signal.SIGKILL)
        except OSError:
            continue


def start_nginx(route: Route, parent_death_signal: int | None = None) -> subprocess.Popen:
    stop_strays(route)
    command = [nginx_binary(), "-p", str(route.directory), "-c", str(route.directory / CONFIG_FILE), "-g", "daemon off;"]
    process = start_detached(command, dict(os.environ), route.directory / "nginx.log", route.directory,
                             parent_death_signal=parent_death_signal)
    def started() -> bool:
        if process.poll() is not None:
            log = (route.directory / "nginx.log").read_text()[-2000:]
            raise MfnError(f"nginx stopped at start ({process.returncode}): {log}")
        return nginx_pid(route) == process.pid

    if poll(started, START_TIMEOUT_S, every_s=0.02):
        return process
    raise MfnError(f"nginx did not start within {START_TIMEOUT_S:g} s; its log: {route.directory / 'nginx.log'}")


def nginx_pid(route: Route) -> int | None:
    try:
        pid = int((route.directory / "nginx.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if process_start_time(pid) is not None else None


def reload_nginx(route: Route) -> None:
    """Graceful: new workers take the new configuration, old ones finish the requests they hold, then exit."""
    pid = nginx_pid(route)
    if pid is None:
        raise MfnError(f"the proxy of {route.name} is not running; see {route.directory / 'nginx.log'}")
    before = set(children(pid))
    os.kill(pid, signal.SIGHUP)
    # Applied once a worker started after the signal runs and every older one has stopped accepting: the master
    # tells old workers to shut down only about 100 ms after starting the new ones, and until then they still
    # take new connections. An old worker that finishes requests it holds is titled "... is shutting down".
    def applied() -> bool:
        workers = children(pid)
        started = any(letter != "Z" for child, (letter, _) in workers.items() if child not in before)
        old_accepting = [child for child in before if child in workers and workers[child][0] != "Z"
                         and "shutting down" not in " ".join(workers[child][1])]
        return started and not old_accepting

    if poll(applied, START_TIMEOUT_S, every_s=0.01):
        return
    raise MfnError(f"the proxy of {route.name} did not take its new configuration; see {route.directory / 'error.log'}")


def stop(name: str) -> str | None:
    """Stop the route's controller and proxy (requests in flight are answered) and remove the route; the canary
    track's deployment name where one may still run, for the caller to undeploy."""
    from mfn.servers.process import stop_process_group

    route = load(name)  # the caller holds the lock; a controller waiting for it gives up once told to stop
    if route is None:
        return None
    # First the record: from here on nothing starts the controller again (mfn.local.supervisor asks).
    (route.directory / ROUTE_FILE).unlink(missing_ok=True)
    if route.controller_pid:
        stop_process_group(route.controller_pid, route.controller_start_time, grace_s=STOP_GRACE_S)
    pid = nginx_pid(route)
    if pid is not None:  # a controller killed outright leaves nginx to its parent-death signal; make sure
        stop_process_group(pid, process_start_time(pid), grace_s=STOP_GRACE_S)
    stop_strays(route)
    remove(name)
    return route.rollout.canary if route.rollout else None


def start_controller(route: Route) -> None:
    """Start the route's controller (mfn.proxy.controller), which starts nginx; the caller holds the lock."""
    import sys

    process = start_detached([sys.executable, "-m", "mfn.proxy.controller", route.name], dict(os.environ),
                             route.directory / "controller.log", route.directory)
    def started() -> bool:
        if process.poll() is not None:
            log = (route.directory / "controller.log").read_text()[-3000:]
            raise MfnError(f"the rollout controller of {route.name} stopped at start:\n{log}")
        return nginx_pid(route) is not None

    if poll(started, CONTROLLER_START_S, every_s=0.02):
        route.controller_pid, route.controller_start_time = process.pid, process_start_time(process.pid)
        save(route)
        return
    raise MfnError(f"the proxy of {route.name} did not start within {CONTROLLER_START_S:g} s; "
                   f"see {route.directory / 'controller.log'}")


def ensure_controller(name: str) -> bool:
    """Start the route's controller again where the route exists and its controller does not run (it was killed,
    or the machine restarted); the deployment's supervisor asks at each health check. True when it started one."""
    route = load(name)
    if route is None or route.controller_running:
        return False
    with locking.exclusive(name):
        route = load(name)
        if route is None or route.controller_running:
            return False
        start_controller(route)
        return True
