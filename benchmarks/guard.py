"""The guard in front of Triton's HTTP endpoint (mfn/proxy/guard.js): what it adds to a request.

The proxy's own configuration (mfn.proxy.nginx_config.render) in front of a stub upstream (nginx answering 200 at
once), rendered with and without the guard, so the difference is the guard alone: nginx's njs reading the body,
the checks, and the internal redirect. One request at a time over a kept connection, binary (the KServe binary
extension: only the JSON header is parsed) and JSON bodies of a few sizes; rounds alternate between the two.

Run: `python benchmarks/guard.py [--calls 2000]`; results in benchmarks/results/guard.json.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mfn.proxy import fronting  # noqa: E402
from mfn.proxy.nginx_config import ProxyConfig, Routing, Track, render  # noqa: E402
from mfn.proxy.routes import nginx_binary  # noqa: E402
from mfn.servers.process import free_ports  # noqa: E402

ROUNDS = 10


def stub_config(directory: Path, port: int) -> str:
    temps = "".join(f"{kind}_temp_path {directory}/{kind}; " for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return (f"worker_processes 1; pid {directory}/stub.pid; error_log {directory}/stub.log warn; daemon off;\n"
            f"events {{ worker_connections 1024; }}\n"
            f"http {{ access_log off; {temps} client_max_body_size 0; server {{ listen 127.0.0.1:{port}; "
            f"location / {{ return 200 '{{\"outputs\":[]}}'; }} }} }}\n")


def start(directory: Path, text: str) -> subprocess.Popen:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "temp").mkdir(exist_ok=True)
    conf = directory / "nginx.conf"
    conf.write_text(text)
    return subprocess.Popen([nginx_binary(), "-p", str(directory), "-c", str(conf), "-g", "daemon off;"] if "daemon off" not in text
                            else [nginx_binary(), "-p", str(directory), "-c", str(conf)])


def wait_listening(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nginx is not listening on {port}")


def request_bytes(body: bytes, header_length: int | None) -> bytes:
    extra = f"Inference-Header-Content-Length: {header_length}\r\n" if header_length is not None else ""
    return (f"POST /v2/models/m/infer HTTP/1.1\r\nHost: bench\r\nContent-Type: application/octet-stream\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def timed_calls(port: int, raw: bytes, calls: int) -> list[float]:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = sock.makefile("rb")
        times = []
        for _ in range(calls):
            started = time.perf_counter()
            sock.sendall(raw)
            status = reader.readline()
            length = 0
            while (line := reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            reader.read(length)
            times.append(time.perf_counter() - started)
            assert b" 200 " in status, status
        return times


def bodies() -> dict[str, tuple[bytes, int | None]]:
    made = {}
    for rows in (1, 64):
        header = json.dumps({"inputs": [{"name": "x", "shape": [rows, 256], "datatype": "FP32",
                                         "parameters": {"binary_data_size": rows * 1024}}]}).encode()
        made[f"binary {rows}x256 FP32"] = (header + bytes(rows * 1024), len(header))
        made[f"JSON {rows}x256 FP32"] = (json.dumps({"inputs": [{"name": "x", "shape": [rows, 256], "datatype": "FP32",
                                                                "data": [0.5] * (rows * 256)}]}).encode(), None)
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="Calls per body and path, in alternating rounds.")
    args = parser.parse_args()
    stub_port, guarded_port, plain_port, grpc_a, grpc_b = free_ports(5)
    processes = []
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        try:
            processes.append(start(root / "stub", stub_config(root / "stub", stub_port)))
            primary = Track(f"127.0.0.1:{stub_port}", f"127.0.0.1:{stub_port}", "primary-key")
            for port, grpc_port, guard in ((guarded_port, grpc_a, fronting.guard()), (plain_port, grpc_b, None)):
                directory = root / str(port)
                directory.mkdir()
                config = ProxyConfig("triton", "127.0.0.1", port, grpc_port, None, 64 << 20, str(directory), primary, None,
                                     Routing("canary"), guard=guard)
                processes.append(start(directory, render(config)))
            for port in (stub_port, guarded_port, plain_port):
                wait_listening(port)
            results = {}
            for label, (body, header_length) in bodies().items():
                raw = request_bytes(body, header_length)
                per_round = args.calls // ROUNDS
                guarded, plain = [], []
                for _ in range(ROUNDS):
                    plain += timed_calls(plain_port, raw, per_round)
                    guarded += timed_calls(guarded_port, raw, per_round)
                results[label] = {"body_bytes": len(body), "without_guard_us": round(statistics.median(plain) * 1e6, 1),
                                  "with_guard_us": round(statistics.median(guarded) * 1e6, 1)}
                results[label]["added_us"] = round(results[label]["with_guard_us"] - results[label]["without_guard_us"], 1)
                print(label, results[label], flush=True)
        finally:
            for process in processes:
                process.terminate()
                process.wait()
    out = ROOT / "benchmarks" / "results" / "guard.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
