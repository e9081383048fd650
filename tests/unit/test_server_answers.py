"""What the supervisor counts as a server that answers, and the open-file limit it hands its server.

Sockets stand in for servers: one that answers HTTP with an error, one that never accepts (a server out of file
descriptors, whose connections wait in the kernel's backlog), and a port nobody listens on.
"""

from __future__ import annotations

import http.server
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from mfn.local.state import Deployment
from mfn.local.supervision import server_answers
from mfn.servers.process import free_ports

TIMEOUT_S = 0.5


def deployment(port: int) -> Deployment:
    return Deployment(name="probe", server="triton", pid=0, start_time=None, host="127.0.0.1", ports={"http": port},
                      models=[], repository="", log_file="", workdir="")


@pytest.fixture
def refusing_http_server() -> Iterator[int]:
    """An HTTP server that answers every request with 401."""

    class Refuse(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(401)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def never_accepting() -> Iterator[int]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


def test_any_http_status_is_an_answer(refusing_http_server):
    assert server_answers(deployment(refusing_http_server), "triton", TIMEOUT_S)


def test_a_connection_left_in_the_backlog_is_no_answer_and_costs_the_timeout(never_accepting):
    started = time.monotonic()
    assert not server_answers(deployment(never_accepting), "triton", TIMEOUT_S)
    assert TIMEOUT_S <= time.monotonic() - started < TIMEOUT_S + 1.0


def test_a_refused_connection_is_no_answer():
    (port,) = free_ports(1)
    assert not server_answers(deployment(port), "triton", TIMEOUT_S)


def test_the_server_inherits_the_hard_open_file_limit_as_its_soft_one():
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    script = (
        "import resource, subprocess\n"
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({min(1024, hard // 2)}, {hard}))\n"
        "from mfn.local.supervision import raise_open_file_limit\n"
        "raise_open_file_limit()\n"
        "print(subprocess.run(['sh', '-c', 'ulimit -Sn'], capture_output=True, text=True).stdout.strip())\n"
    )
    inherited = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.strip()
    assert inherited == str(hard)
