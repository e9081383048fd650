"""The chart's model probe: the requests it builds from packaged specs, its cache, and its verdicts
against a small HTTP server standing in for the model server."""

from __future__ import annotations

import json
import struct
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

import mfn
from mfn.errors import MfnError
from mfn.kubernetes import probe
from mfn.spec import Entrypoint, ModelSpec
from tests.conftest import EXAMPLES

ENTRY = Entrypoint(file="handler.py", attribute="H")
OUTPUTS = [mfn.Tensor("y", "FP32", [1])]


def write_triton_spec(models: Path, spec: ModelSpec) -> None:
    version_dir = models / spec.name / str(spec.version)
    version_dir.mkdir(parents=True)
    (version_dir / "mfn.json").write_text(spec.to_json())


def triton_inputs(request: probe.ProbeRequest) -> dict[str, tuple[dict, bytes]]:
    """Each input's JSON description and raw bytes, read back from Triton's binary form."""
    header_length = int(request.headers[probe.TRITON_HEADER_LENGTH])
    header = json.loads(request.body[:header_length])
    assert header["parameters"] == {"binary_data_output": True}
    raw, offset = {}, header_length
    for item in header["inputs"]:
        size = item["parameters"]["binary_data_size"]
        raw[item["name"]] = (item, request.body[offset : offset + size])
        offset += size
    assert offset == len(request.body)
    return raw


def test_triton_requests_use_the_newest_version_and_binary_tensors(tmp_path):
    old = ModelSpec(name="m", version=1, inputs=[mfn.Tensor("a", "FP32", [4])], outputs=OUTPUTS, entrypoint=ENTRY)
    new = ModelSpec(
        name="m", version=2, outputs=OUTPUTS, entrypoint=ENTRY,
        inputs=[
            mfn.Tensor("half", "FP16", [3]),  # Triton refuses FP16 in JSON, hence the binary form
            mfn.Tensor("scalar", "INT64", []),
            mfn.Tensor("ragged", "FP32", [-1, 2]),
            mfn.Tensor("text", "BYTES", [1]),
            mfn.Tensor("flag", "BOOL", [1]),
        ],
    )
    write_triton_spec(tmp_path, old)
    write_triton_spec(tmp_path, new)
    (request,) = probe.build_requests("triton", tmp_path, ["m"])
    assert request.path == "/v2/models/m/infer"
    inputs = triton_inputs(request)
    assert list(inputs) == ["half", "scalar", "ragged", "text", "flag"]
    shapes = {name: item["shape"] for name, (item, _) in inputs.items()}
    # A per-row scalar is [batch, 1] on Triton's API; a variable dimension gets a small size.
    assert shapes == {"half": [1, 3], "scalar": [1, 1], "ragged": [1, 2, 2], "text": [1, 1], "flag": [1, 1]}
    assert {name: item["datatype"] for name, (item, _) in inputs.items()}["half"] == "FP16"
    assert np.frombuffer(inputs["half"][1], "<f2").shape == (3,)
    assert np.frombuffer(inputs["ragged"][1], "<f4").shape == (4,)
    (length,) = struct.unpack("<I", inputs["text"][1][:4])
    assert inputs["text"][1][4:].decode() in {"mfn", "sample", "text"} and length == len(inputs["text"][1]) - 4


def test_torchserve_requests_are_kserve_json_read_from_the_archive(tmp_path):
    mfn.package(f"{EXAMPLES / 'text_stats' / 'handler.py'}:text_stats", tmp_path, server="torchserve")
    (request,) = probe.build_requests("torchserve", tmp_path, ["text_stats"])
    assert request.path == "/predictions/text_stats"
    assert request.headers == {"Content-Type": "application/json"}
    (item,) = json.loads(request.body)["inputs"]
    assert item["name"] == "text" and item["datatype"] == "BYTES" and item["shape"] == [1, 1]
    assert isinstance(item["data"][0], str)


def test_a_model_without_a_spec_is_named(tmp_path):
    (tmp_path / "other").mkdir()
    with pytest.raises(MfnError, match="holds no <version>/mfn.json"):
        probe.build_requests("triton", tmp_path, ["other"])
    with pytest.raises(MfnError, match="no archive of model 'missing'"):
        probe.build_requests("torchserve", tmp_path, ["missing"])


def test_requests_are_built_once_and_rebuilt_for_other_models(tmp_path):
    models = tmp_path / "models"
    write_triton_spec(models, ModelSpec(name="m", inputs=[mfn.Tensor("a", "FP32", [4])], outputs=OUTPUTS, entrypoint=ENTRY))
    cache = tmp_path / "probe.json"
    first = probe.load_or_build(cache, "triton", models, ["m"])
    (models / "m" / "1" / "mfn.json").unlink()  # later runs must not need the spec again
    assert probe.load_or_build(cache, "triton", models, ["m"]) == first
    with pytest.raises(MfnError):
        probe.load_or_build(cache, "triton", models, ["m", "n"])
    cache.write_text("{not json")
    with pytest.raises(MfnError):
        probe.load_or_build(cache, "triton", models, ["m"])


def test_the_inference_key_is_read_only_when_the_key_file_exists(tmp_path):
    key_file = tmp_path / "key_file.json"
    assert probe.inference_token(key_file) is None
    assert probe.inference_token(None) is None
    key_file.write_text(json.dumps({"management": {"key": "m"}, "inference": {"key": "secret"}, "API": {"key": "a"}}))
    assert probe.inference_token(key_file) == "secret"


class FakeServer:
    """Answers POSTs as told by `reply` (status, body, delay_s) and records what it received."""

    def __init__(self) -> None:
        self.reply: tuple[int, str, float] = (200, json.dumps({"outputs": [{"name": "y"}]}), 0.0)
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                fake.received.append((self.path, dict(self.headers), body))
                status, text, delay_s = fake.reply
                time.sleep(delay_s)
                self.send_response(status)
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text.encode())

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]


@pytest.fixture
def server() -> Iterator[FakeServer]:
    fake = FakeServer()
    thread = threading.Thread(target=fake.server.serve_forever, daemon=True)
    thread.start()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


REQUESTS = [
    probe.ProbeRequest("a", "/v2/models/a/infer", b"{}", {"Content-Type": "application/json"}),
    probe.ProbeRequest("b", "/v2/models/b/infer", b"{}", {"Content-Type": "application/json"}),
]


def test_every_model_answering_with_outputs_passes(server):
    assert probe.check(REQUESTS, server.port, timeout_s=5, token="k") == []
    assert [path for path, _, _ in server.received] == ["/v2/models/a/infer", "/v2/models/b/infer"]
    assert all(headers["Authorization"] == "Bearer k" for _, headers, _ in server.received)


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ((400, json.dumps({"error": "Stub process 'a_0_0' is not healthy."}), 0.0), "HTTP 400: Stub process 'a_0_0' is not healthy."),
        ((507, "Worker died.", 0.0), "HTTP 507: Worker died."),
        ((200, json.dumps({"model_name": "a"}), 0.0), "HTTP 200 without outputs"),
        ((200, "not json", 0.0), "HTTP 200 without outputs"),
    ],
)
def test_a_model_that_does_not_answer_fails_with_the_reason(server, reply, expected):
    server.reply = reply
    failures = probe.check(REQUESTS[:1], server.port, timeout_s=5)
    assert len(failures) == 1 and failures[0].startswith(f"a: {expected}")


def test_the_time_limit_covers_all_models(server):
    server.reply = (200, json.dumps({"outputs": [{}]}), 1.0)
    started = time.monotonic()
    failures = probe.check(REQUESTS, server.port, timeout_s=0.5)
    assert time.monotonic() - started < 1.0
    assert failures[0].startswith("a: no answer") and failures[1] == "b: not tried, the probe's 0.5 s were used up"


def test_a_closed_port_fails():
    from mfn.servers.process import free_ports

    (port,) = free_ports(1)
    assert probe.check(REQUESTS[:1], port, timeout_s=2)[0].startswith("a: no answer")


def test_main_exits_with_the_verdict(server, tmp_path, capsys):
    models = tmp_path / "models"
    write_triton_spec(models, ModelSpec(name="m", inputs=[mfn.Tensor("a", "FP32", [4])], outputs=OUTPUTS, entrypoint=ENTRY))
    args = [f"--port={server.port}", "--server=triton", f"--models-dir={models}", f"--cache={tmp_path / 'c.json'}", "--model=m"]
    assert probe.main(args) == 0
    assert "1 model(s) answered" in capsys.readouterr().out
    server.reply = (500, json.dumps({"error": "boom"}), 0.0)
    assert probe.main(args) == 1
    assert "mfn probe: m: HTTP 500: boom" in capsys.readouterr().out
    assert probe.main([*args[:-1], "--model=absent"]) == 1
    assert "cannot prepare the sample requests" in capsys.readouterr().out
