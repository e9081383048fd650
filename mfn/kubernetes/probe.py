"""The model probe the chart's pods run: every model gets one sample request, and all must answer.

The servers' own health endpoints (Triton's /v2/health/ready, TorchServe's /ping) answer 200 while a
model's Triton Python stub or TorchServe worker is dead, so the chart's startup, readiness and liveness
probes run this instead, as an exec probe inside the server container:

    python3 -m mfn.kubernetes.probe --server=triton --port=8000 --models-dir=/models --model=NAME ...

It exits 0 when every model answered its sample with outputs, and 1 (printing what failed) otherwise.
The first run reads each model's spec from the packaged models and caches the requests it builds in
`--cache`; later runs only send them, so a probe costs an interpreter start and one request per model.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mfn.servers.http import error_message, request

if TYPE_CHECKING:
    import numpy as np

    from mfn.handlers.declarations import Tensor
    from mfn.spec import ModelSpec

CACHE_FORMAT = 2
SAMPLE_ROWS = 1
# Triton's binary tensor extension: the JSON header's length, then each input's raw bytes.
TRITON_HEADER_LENGTH = "Inference-Header-Content-Length"


@dataclass(frozen=True)
class ProbeRequest:
    """One model's sample request: where it goes on the server's HTTP port, its body and headers."""

    model: str
    path: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    streaming: bool = False  # a streaming model function: its first chunk is the answer

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe form for the cache file."""
        return {"model": self.model, "path": self.path, "body": base64.b64encode(self.body).decode(),
                "headers": self.headers, "streaming": self.streaming}

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> ProbeRequest:
        """The request `to_json` wrote."""
        return cls(item["model"], item["path"], base64.b64decode(item["body"]), dict(item["headers"]), item["streaming"])


def build_requests(server: str, models_dir: Path, models: list[str]) -> list[ProbeRequest]:
    """A KServe v2 inference request per model, from a one-row sample of the newest packaged version's inputs.

    Raises:
        MfnError: a model has no spec mfn can read under `models_dir`.
    """
    builder = _REQUEST_BUILDERS[server]
    return [builder(models_dir, model) for model in models]


def load_or_build(cache: Path, server: str, models_dir: Path, models: list[str]) -> list[ProbeRequest]:
    """The cached requests when they were built for the same server and models, else freshly built ones.

    The cache is written atomically: the kubelet may run the readiness and liveness probes at once.
    """
    key = {"format": CACHE_FORMAT, "server": server, "models_dir": str(models_dir), "models": models}
    try:
        cached = json.loads(cache.read_text())
        if {name: cached.get(name) for name in key} == key:
            return [ProbeRequest.from_json(item) for item in cached["requests"]]
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no usable cache yet: build it below
    requests = build_requests(server, models_dir, models)
    partial = cache.with_name(f"{cache.name}.{os.getpid()}")
    partial.write_text(json.dumps({**key, "requests": [item.to_json() for item in requests]}))
    partial.replace(cache)
    return requests


def inference_token(key_file: Path | None, key_env: str | None = None) -> str | None:
    """The inference key: TorchServe's current one when token authorization is on (its key file exists),
    or Triton's from the environment variable `key_env` (the chart's Secret); None when inference is open.

    Read on every run: TorchServe writes the file at start and rotates the keys when they expire.
    """
    if key_env:
        return os.environ.get(key_env) or None
    if key_file is None or not key_file.is_file():
        return None
    return str(json.loads(key_file.read_text())["inference"]["key"])


def check(
    requests: list[ProbeRequest],
    port: int,
    timeout_s: float,
    token: str | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> list[str]:
    """Send each request to 127.0.0.1:`port`; one line per model that did not answer, within `timeout_s` overall."""
    authorization = {"Authorization": f"Bearer {token}"} if token else {}
    deadline = clock() + timeout_s
    failures = []
    for item in requests:
        left_s = deadline - clock()
        if left_s <= 0:
            failures.append(f"{item.model}: not tried, the probe's {timeout_s:g} s were used up")
            continue
        headers = {**item.headers, **authorization}
        if item.streaming:
            problem = _chunk_problem(*_first_chunk(port, item, headers, left_s))
        else:
            status, text = request("POST", f"http://127.0.0.1:{port}{item.path}", left_s, item.body, headers)
            problem = _answer_problem(status, text)
        if problem:
            failures.append(f"{item.model}: {problem}")
    return failures


def main(argv: list[str] | None = None) -> int:
    """Run the probe once; the exit status is the probe's result."""
    args = _parser().parse_args(argv)
    try:
        requests = load_or_build(args.cache, args.server, args.models_dir, args.model)
        token = inference_token(args.key_file, args.key_env)
    except Exception as error:  # noqa: BLE001 - any failure to prepare is a failed probe, reported in one line
        print(f"mfn probe: cannot prepare the sample requests: {error}")
        return 1
    failures = check(requests, args.port, args.timeout_s, token)
    for failure in failures:
        print(f"mfn probe: {failure}")
    if not failures:
        print(f"mfn probe: {len(requests)} model(s) answered")
    return 1 if failures else 0


def _parser() -> argparse.ArgumentParser:
    # argparse rather than click: the probe runs every few seconds, so it imports as little as it can.
    parser = argparse.ArgumentParser(prog="python -m mfn.kubernetes.probe", description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True, choices=sorted(_REQUEST_BUILDERS))
    parser.add_argument("--port", required=True, type=int, help="The server's HTTP (inference) port on 127.0.0.1.")
    parser.add_argument("--models-dir", required=True, type=Path, help="The Triton repository or TorchServe model store.")
    parser.add_argument("--model", required=True, action="append", help="A model to probe; repeat for each.")
    parser.add_argument("--cache", required=True, type=Path, help="Where the built requests are kept between runs.")
    parser.add_argument("--timeout-s", type=float, default=5.0, help="Time for all models together.")
    parser.add_argument("--key-file", type=Path, help="TorchServe's key_file.json; used when token authorization is on.")
    parser.add_argument("--key-env", help="Environment variable holding Triton's inference key.")
    return parser


def _answer_problem(status: int, text: str) -> str | None:
    if status == 0:
        return f"no answer: {text}"
    if status != 200:
        return f"HTTP {status}: {error_message(text)[:300]}"
    try:
        # Triton follows the JSON header with binary outputs: read only the first JSON value.
        outputs = json.JSONDecoder().raw_decode(text)[0].get("outputs")
    except (ValueError, AttributeError):
        outputs = None
    return None if isinstance(outputs, list) and outputs else f"HTTP 200 without outputs: {text[:300]}"


def _first_chunk(port: int, item: ProbeRequest, headers: dict[str, str], timeout_s: float) -> tuple[int, str]:
    """(status, first line of data) of a streamed answer; the connection is closed after it, so a long stream
    does not hold the probe (Triton cancels the request then)."""
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        connection.request("POST", item.path, body=item.body, headers=headers)
        response = connection.getresponse()
        if response.status != 200:
            return response.status, response.read().decode("utf-8", "replace")
        while line := response.readline():
            if line.strip():
                return 200, line.decode("utf-8", "replace").removeprefix("data: ")
        return 200, ""
    except (OSError, http.client.HTTPException) as error:
        return 0, str(error) or type(error).__name__
    finally:
        connection.close()


def _chunk_problem(status: int, text: str) -> str | None:
    if status != 200:
        return _answer_problem(status, text)
    try:
        chunk = json.loads(text)
    except ValueError:
        chunk = None
    if not isinstance(chunk, dict) or "error" in chunk or chunk.get("end"):
        return f"HTTP 200 without a first chunk of outputs: {text[:300]}"
    return None


def _triton_request(models_dir: Path, model: str) -> ProbeRequest:
    """Inputs and outputs in Triton's binary form: its JSON form refuses FP16 and BF16 tensors."""
    from mfn.errors import MfnError
    from mfn.model_repository.render import exposed_dims
    from mfn.runtime.bundle import SPEC_FILE
    from mfn.spec import ModelSpec

    versions = [path for path in (models_dir / model).glob(f"*/{SPEC_FILE}") if path.parent.name.isdigit()]
    if not versions:
        raise MfnError(f"{models_dir / model} holds no <version>/{SPEC_FILE}: was it packaged by `mfn package`?")
    spec = ModelSpec.from_json(max(versions, key=lambda path: int(path.parent.name)).read_text())
    if spec.streaming:
        # A decoupled model answers on HTTP only through generate_stream: flat JSON values, one row.
        values = {tensor.name: _json_values(array) for tensor, array in _sample(spec)}
        return ProbeRequest(model, f"/v2/models/{model}/generate_stream", json.dumps(values).encode(),
                            {"Content-Type": "application/json"}, streaming=True)
    inputs, raw = [], []
    for tensor, array in _sample(spec):
        data = _raw_bytes(array)
        # Triton shows a per-row scalar as [batch, 1]: it has no zero-dimension tensors.
        shape = [SAMPLE_ROWS, *(array.shape[1:] or exposed_dims(tensor))]
        inputs.append({"name": tensor.name, "shape": shape, "datatype": tensor.dtype, "parameters": {"binary_data_size": len(data)}})
        raw.append(data)
    header = json.dumps({"inputs": inputs, "parameters": {"binary_data_output": True}}).encode()
    headers = {"Content-Type": "application/octet-stream", TRITON_HEADER_LENGTH: str(len(header))}
    return ProbeRequest(model, f"/v2/models/{model}/infer", header + b"".join(raw), headers)


def _torchserve_request(models_dir: Path, model: str) -> ProbeRequest:
    """A KServe v2 JSON body, which mfn's TorchServe adapter answers in kind."""
    from mfn.archiver.reading import archive_info, archive_spec, store_archives
    from mfn.errors import MfnError

    archives = [archive for archive in store_archives(models_dir) if archive_info(archive).name == model]
    if not archives:
        raise MfnError(f"{models_dir} holds no archive of model {model!r}")
    spec = max((archive_spec(archive) for archive in archives), key=lambda spec: spec.version)
    inputs = [
        {
            "name": tensor.name,
            "shape": list(array.shape),
            "datatype": tensor.dtype,
            "data": _json_values(array),
        }
        for tensor, array in _sample(spec)
    ]
    body = json.dumps({"inputs": inputs}).encode()
    return ProbeRequest(model, f"/predictions/{model}", body, {"Content-Type": "application/json"}, spec.streaming)


def _json_values(array: np.ndarray) -> list[Any]:
    return [value.decode() if isinstance(value, bytes) else value for value in array.ravel().tolist()]


def _sample(spec: ModelSpec) -> list[tuple[Tensor, np.ndarray]]:
    from mfn.handlers.samples import sample_arrays

    arrays = sample_arrays(spec.inputs, SAMPLE_ROWS)
    return [(tensor, arrays[tensor.name]) for tensor in spec.inputs]


def _raw_bytes(array: np.ndarray) -> bytes:
    """Row-major little-endian values; BYTES elements each prefixed by their 4-byte length."""
    if array.dtype == object:
        return b"".join(struct.pack("<I", len(value)) + value for value in array.ravel().tolist())
    return array.astype(array.dtype.newbyteorder("<")).tobytes()


_REQUEST_BUILDERS: dict[str, Callable[[Path, str], ProbeRequest]] = {
    "triton": _triton_request,
    "torchserve": _torchserve_request,
}

if __name__ == "__main__":
    sys.exit(main())
