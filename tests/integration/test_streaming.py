"""Streaming model functions on both real servers, over HTTP and gRPC: chunks arrive as the handler yields them,
concurrent streams are batched, each request ends on its own done mask, and a cancelled stream stops predict."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from click.testing import CliRunner

import mfn
from mfn.cli.main import cli
from mfn.local import deployments
from mfn.errors import InvokeError
from tests.conftest import HANDLERS, scrape, wait_for

pytestmark = pytest.mark.integration
STREAMER = f"{HANDLERS / 'streamer.py'}:Streamer"
SERVERS = ["triton", "torchserve"]
PROTOCOLS = ["http", "grpc"]
CASES = [(server, protocol) for server in SERVERS for protocol in PROTOCOLS]
NAMES = {"triton": "streams", "torchserve": "streams-ts"}


@pytest.fixture(scope="module")
def logs(tmp_path_factory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("stream-logs")
    return {server: directory / f"{server}.log" for server in SERVERS}


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> dict[str, Path]:
    return {server: tmp_path_factory.mktemp(f"streams-{server}") for server in SERVERS}


@pytest.fixture(scope="module")
def served(outputs, logs) -> Iterator[dict[str, deployments.Deployment]]:
    deployed = {}
    try:
        for server in SERVERS:
            output = outputs[server]
            mfn.package(STREAMER, output, server=server)
            # The server's model processes inherit the environment: the handler notes its steps in this file.
            os.environ["MFN_TEST_STREAM_LOG"] = str(logs[server])
            deployed[server] = deployments.deploy(output, name=NAMES[server], drain_timeout_s=0)
        yield deployed
    finally:
        os.environ.pop("MFN_TEST_STREAM_LOG", None)
        for deployment in deployed.values():
            deployments.undeploy(deployment.name)


def timed_chunks(name: str, protocol: str, steps: int, delay_ms: int) -> list[tuple[float, dict]]:
    with mfn.Client(name, protocol=protocol) as client:
        started = time.monotonic()
        return [(time.monotonic() - started, chunk)
                for chunk in client.stream("streamer", {"steps": [[steps]], "delay_ms": [[delay_ms]]})]


@pytest.mark.parametrize(("server", "protocol"), CASES)
def test_chunks_arrive_as_the_handler_yields_them_not_at_the_end(served, server, protocol):
    chunks = timed_chunks(NAMES[server], protocol, steps=4, delay_ms=400)
    assert [chunk["step"].tolist() for _, chunk in chunks] == [[[1]], [[2]], [[3]], [[4]]]
    first, last = chunks[0][0], chunks[-1][0]
    assert last - first > 0.9, f"chunks were buffered: first at {first:.2f} s, last at {last:.2f} s"


@pytest.mark.parametrize(("server", "protocol"), CASES)
def test_concurrent_streams_are_batched_and_each_ends_with_its_own_rows(served, server, protocol):
    wanted = [2, 5, 3, 4]
    with ThreadPoolExecutor(len(wanted)) as pool:
        results = list(pool.map(lambda steps: timed_chunks(NAMES[server], protocol, steps, 300), wanted))
    assert [len(chunks) for chunks in results] == wanted
    assert max(int(chunk["batch"].item()) for chunks in results for _, chunk in chunks) > 1, "no two streams shared a batch"


def test_a_cancelled_stream_on_triton_stops_predict_between_chunks(served, logs):
    """Closing the iterator cancels the request; Triton tells the model, which stops and closes its generator."""
    logs["triton"].write_text("")
    with mfn.Client(NAMES["triton"], protocol="grpc") as client:
        chunks = client.stream("streamer", {"steps": [[40]], "delay_ms": [[100]]})
        assert [next(chunks)["step"].item(), next(chunks)["step"].item()] == [1, 2]
        chunks.close()
    wait_for(lambda: "closed" in logs["triton"].read_text(), 10, "the handler to note the stream closed")
    noted = logs["triton"].read_text().splitlines()
    assert noted[-1] == "closed" and len(noted) - 1 < 10, noted  # stopped long before step 40


@pytest.mark.parametrize(("server", "protocol"), CASES)
def test_a_plain_request_to_a_streaming_model_says_how_to_stream(served, server, protocol):
    with mfn.Client(NAMES[server], protocol=protocol) as client, pytest.raises(InvokeError, match=r"Client\.stream\('streamer'"):
        client.infer("streamer", {"steps": [[1]], "delay_ms": [[0]]})


@pytest.mark.parametrize("server", SERVERS)
def test_invoke_stream_prints_one_json_object_per_chunk(served, server):
    result = CliRunner().invoke(cli, ["invoke", "streamer", "--deployment", NAMES[server], "--stream", "--json",
                                      "-d", '{"steps": [[3]], "delay_ms": [[0]]}'])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert [(line["chunk"], line["outputs"]["step"]) for line in lines] == [(1, [[1]]), (2, [[2]]), (3, [[3]])]


@pytest.mark.parametrize("server", SERVERS)
def test_streaming_metrics_count_chunks_and_time_to_first_chunk(served, server):
    timed_chunks(NAMES[server], "grpc", steps=3, delay_ms=0)

    def streamer_counts() -> dict[str, float] | None:
        samples = {name: value for name, labels, value in scrape(served[server].metrics_url)
                   if labels.get("model") == "streamer" and not labels.get("le")}
        return samples if samples.get("mfn_stream_chunks_count", 0) > 0 else None

    samples = wait_for(streamer_counts, 5, "the stream's chunks in the metrics", every_s=0.2)
    assert samples["mfn_first_chunk_seconds_count"] > 0


@pytest.mark.parametrize("server", SERVERS)
def test_the_pod_probe_reads_a_streaming_models_first_chunk(served, outputs, server):
    """The chart's probes send every model a sample request; a streaming model answers it with a stream."""
    from mfn.local.state import read_key
    from mfn.kubernetes.probe import build_requests, check

    deployment = served[server]
    (item,) = build_requests(server, outputs[server], ["streamer"])
    assert item.streaming
    assert check([item], deployment.ports["http"], timeout_s=20, token=read_key(deployment, "inference")) == []
