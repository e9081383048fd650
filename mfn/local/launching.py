"""Starting a server process and talking to it: what every local server shares (see mfn.local.servers)."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from mfn.polling import poll
from mfn.progress import step
from mfn.local import state
from mfn.local.state import Deployment
from mfn.errors import DeployError
from mfn.servers.http import error_message, request
from mfn.servers.process import free_ports, process_start_time, start_detached, stop_process_group

SHM_DIR = Path("/dev/shm")
START_TIMEOUT_S = 90.0
LOAD_TIMEOUT_S = 300.0


def load_timeout_s(deployment: Deployment) -> float:
    """How long one model's load may take in this deployment (`mfn deploy --load-timeout`)."""
    return deployment.load_timeout_s if deployment.load_timeout_s is not None else LOAD_TIMEOUT_S
STOP_GRACE_S = 15.0
DRAIN_TIMEOUT_S = 30.0
PORT_ATTEMPTS = 3
PORT_RELEASE_S = 10.0
LOG_TAIL_LINES = 30



@contextmanager
def terminate_interrupts() -> Iterator[None]:
    """Make SIGTERM (what systemd and `docker stop` send) raise KeyboardInterrupt, as Ctrl-C does, so a
    foreground deploy stops its deployment either way. Outside the main thread nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def interrupts_held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM while a stop or a clean-up runs (bounded by its own timeouts), so a second
    Ctrl-C cannot leave a server without its record or supervisor; they are restored afterwards. Outside
    the main thread, where signal handlers cannot be set, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.signal(number, signal.SIG_IGN) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def launch(  # noqa: PLR0913
    name: str,
    server: str,
    workdir: Path,
    port_names: tuple[str, ...],
    make_command: Callable[[dict[str, int]], tuple[list[str], dict[str, str]]],
    live_path: str,
    repository: Path,
    shm_prefix: str = "",
    live_token: Callable[[], str | None] = lambda: None,
    ports: dict[str, int] | None = None,
    parent_death_signal: int = signal.SIGTERM,
    host: str = "127.0.0.1",
    cwd: Path | None = None,
) -> tuple[Deployment, subprocess.Popen]:
    """Start a server process that dies with this one, and wait until `live_path` answers 200.

    The calling process (the deployment's supervisor) is recorded as the deployment's owner. `live_token`
    gives the bearer token the health endpoint needs, if any, once the server has written it. Without
    fixed `ports` (all or some of `port_names`), free ones are chosen, and chosen again when another process took
    one before the server bound it; a restart passes the ports it had, so clients keep their addresses. `host` is
    the address the server listens on; clients reach a wildcard address through 127.0.0.1. The server runs in
    `cwd`, by default `workdir`.
    """
    log_file = workdir / f"{server}.log"
    fixed = {name: port for name, port in (ports or {}).items() if port}
    check_ports_free(host, fixed)
    attempts = 1 if set(fixed) >= set(port_names) else PORT_ATTEMPTS
    for attempt in range(attempts):
        chosen = {**dict(zip(port_names, free_ports(len(port_names)))), **fixed}
        command, env = make_command(chosen)
        step(f"starting {server} for {name} ({', '.join(f'{k} {v}' for k, v in chosen.items())})")
        process = start_detached(command, env, log_file, cwd or workdir, parent_death_signal=parent_death_signal)
        deployment = Deployment(
            name=name,
            server=server,
            pid=os.getpid(),
            start_time=process_start_time(os.getpid()),
            host="127.0.0.1" if host in WILDCARD_HOSTS else host,
            ports=chosen,
            models=[],
            repository=str(repository),
            log_file=str(log_file),
            workdir=str(workdir),
            shm_prefix=shm_prefix,
        )
        if _wait_live(deployment, process, live_path, live_token):
            return deployment, process
        tail = log_tail(deployment)
        stop_process_group(process.pid, process_start_time(process.pid), grace_s=STOP_GRACE_S)
        process.wait()
        if "address already in use" not in tail.lower() or attempt == attempts - 1:
            raise DeployError(f"{server} did not start:\n{tail}")
    raise AssertionError("unreachable")


WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def check_ports_free(host: str, ports: dict[str, int]) -> None:
    """Refuse fixed ports another process holds, naming them, before a server fails on them.

    Raises:
        DeployError: naming the port option and the address.
    """
    import socket

    for name, port in ports.items():
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError as error:
                raise DeployError(f"{name} port {port} on {host or '*'} is not free ({error.strerror}); choose another "
                                  f"or leave --{name.replace('_', '-')}-port out for a free one") from None


def wait_ports_released(host: str, ports: dict[str, int], timeout_s: float = PORT_RELEASE_S) -> None:
    """Wait until a stopped server's ports can be bound again: the JVM closes its sockets while its threads end,
    after the process itself is reported gone. Returns at the timeout; the start's own check then names the port."""
    def released() -> bool:
        try:
            check_ports_free(host, ports)
        except DeployError:
            return False
        return True

    poll(released, timeout_s)


def log_tail(deployment: Deployment, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = Path(deployment.log_file).read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def http_json(
    method: str, url: str, timeout_s: float, token: str | None = None, body: bytes | None = None
) -> tuple[int, dict | str]:
    """Call a server's REST API; the body comes back parsed when it is JSON."""
    code, text = request(method, url, timeout_s=timeout_s, body=body, headers={"Authorization": f"Bearer {token}"} if token else None)
    try:
        return code, json.loads(text)
    except ValueError:
        return code, text


def describe_failure(code: int, body: dict | str, deployment: Deployment) -> str:
    """The server's reason for a failed call, with the log's last lines when the call got no answer."""
    if code == 0:
        return f"{body}\n{log_tail(deployment)}"
    return error_message(body)


def new_shm_prefix() -> str:
    """A fresh prefix for one server's shared-memory regions, tagged with this MFN_HOME (see state.home_tag)."""
    return f"mfn_{state.home_tag()}_{secrets.token_hex(4)}_"


def remove_shm_regions(prefix: str) -> None:
    """Remove the shared-memory regions under a server's prefix; only once no process of that server is left."""
    if prefix:
        for region in SHM_DIR.glob(f"{prefix}*"):
            region.unlink(missing_ok=True)


def make_shm_regions_private(prefix: str) -> None:
    """Make a server's shared-memory regions readable by its user only.

    Triton's Python backend creates them 0644 whatever the umask (it sets the mode after creating), and
    they hold request and answer tensors.
    """
    if prefix:
        for region in SHM_DIR.glob(f"{prefix}*"):
            try:
                if region.stat().st_mode & 0o077:
                    region.chmod(0o600)
            except FileNotFoundError:
                pass  # removed by a stub that stopped meanwhile


def _wait_live(
    deployment: Deployment, process: subprocess.Popen, live_path: str, live_token: Callable[[], str | None]
) -> bool:
    def ended_or_live() -> bool:
        return process.poll() is not None or \
            http_json("GET", f"{deployment.http_url}{live_path}", timeout_s=1.0, token=live_token())[0] == 200

    return bool(poll(ended_or_live, START_TIMEOUT_S)) and process.poll() is None


def with_progress(call: Callable[[], None], note: str, timeout_s: float, every_s: float = 10.0) -> None:
    """Run `call` (a model load, which lasts as long as the handler's setup()) and say every `every_s` that it
    still runs, so a slow setup is not mistaken for a hang."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller's thread
            failure.append(error)

    worker = threading.Thread(target=run, daemon=True)
    started = time.monotonic()
    worker.start()
    while True:
        worker.join(every_s)
        if not worker.is_alive():
            break
        step(f"{note} ({time.monotonic() - started:.0f} s of at most {timeout_s:.0f} s)")
    if failure:
        raise failure[0]
