"""The same handlers on a real TorchServe: parity with Triton and in-process, batching, auth, faults, versions."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from click.testing import CliRunner

import mfn
from mfn.cli.main import cli
from mfn.errors import InvokeError
from mfn.local import deployments
from mfn.servers.torchserve.admin import management_url, read_key
from mfn.runtime.metric_batching import FLUSH_INTERVAL_S
from tests.conftest import scrape, settled, wait_for
from tests.integration.conftest import MLP, TEXT_STATS
from tests.integration.test_triton import in_process
from tests.processes import as_another_user, readable_by_another_user

pytestmark = pytest.mark.integration
PROTOCOLS = ["http", "grpc"]


def metric_samples(deployment, name: str) -> dict[str, float]:
    """Sum of a metric's samples by sample name (e.g. _sum, _count) for model mlp."""
    totals: dict[str, float] = {}
    for sample, labels, value in scrape(deployment.metrics_url):
        if sample.startswith(name) and labels.get("model") == "mlp":
            totals[sample] = totals.get(sample, 0.0) + value
    return totals


def settled_samples(deployment, name: str) -> dict[str, float]:
    """metric_samples once a flush interval has passed without a change: no update is still on its way."""
    return settled(lambda: metric_samples(deployment, name), FLUSH_INTERVAL_S * 1.5, f"{name} of mlp")


def bucket_bounds(deployment, name: str) -> list[str]:
    """The `le` bounds a bucket series has for model mlp, in increasing order."""
    bounds = {labels["le"] for sample, labels, _ in scrape(deployment.metrics_url) if sample == name and labels.get("model") == "mlp"}
    return sorted(bounds, key=float)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_mlp_matches_in_process_and_triton(torchserve_deployment, deployment, protocol):
    features = np.random.default_rng(11).standard_normal((6, 4)).astype(np.float32)
    expected = in_process(MLP, {"features": features})
    with mfn.Client("suite-ts", protocol=protocol) as torchserve, mfn.Client("suite", protocol=protocol) as triton:
        on_torchserve = torchserve.infer("mlp", {"features": features})
        on_triton = triton.infer("mlp", {"features": features})
    for served in (on_torchserve, on_triton):
        np.testing.assert_allclose(served["probs"], expected["probs"], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(served["label"], expected["label"])
    assert on_torchserve["probs"].dtype == np.float32 and on_torchserve["label"].dtype == np.int64


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_text_stats_matches_in_process_and_triton(torchserve_deployment, deployment, protocol):
    texts = np.array([["one two"], ["\u00fcber alles"], [""]], dtype=object)
    expected = in_process(TEXT_STATS, {"text": np.vectorize(str.encode, otypes=[object])(texts)})
    with mfn.Client("suite-ts", protocol=protocol) as torchserve, mfn.Client("suite", protocol=protocol) as triton:
        for served in (torchserve.infer("text_stats", {"text": texts}), triton.infer("text_stats", {"text": texts})):
            for name in ("n_chars", "n_words", "upper"):
                np.testing.assert_array_equal(served[name], expected[name])


def test_32_concurrent_requests_are_correct_and_metrics_show_batches(torchserve_deployment):
    rows = np.random.default_rng(5).standard_normal((32, 4)).astype(np.float32)
    expected = in_process(MLP, {"features": rows})["probs"]
    before = settled_samples(torchserve_deployment, "mfn_batch_size")  # earlier tests' updates included
    with mfn.Client("suite-ts", protocol="grpc") as client, ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(lambda row: client.infer("mlp", {"features": row[None]})["probs"][0], rows))
    np.testing.assert_allclose(np.stack(answers), expected, rtol=1e-5, atol=1e-6)
    # The worker applies metric updates once a second.

    def all_rows_counted() -> dict[str, float] | None:
        now = metric_samples(torchserve_deployment, "mfn_batch_size")
        return now if now.get("mfn_batch_size_sum", 0) - before.get("mfn_batch_size_sum", 0) >= 32 else None

    after = wait_for(all_rows_counted, 10, "the 32 rows in the batch-size metric")
    rows_predicted = after["mfn_batch_size_sum"] - before.get("mfn_batch_size_sum", 0)
    predict_calls = after["mfn_batch_size_count"] - before.get("mfn_batch_size_count", 0)
    assert rows_predicted == 32
    assert predict_calls < 32, f"{predict_calls} predict calls for 32 rows: no batch was larger than 1"
    # Batch sizes are counted in batch-size buckets (1, 2, 4, 8, ...), not TorchServe's latency buckets.
    buckets = bucket_bounds(torchserve_deployment, "mfn_batch_size_bucket")
    assert buckets[:5] == ["1.0", "2.0", "4.0", "8.0", "16.0"] and buckets[-1] == "+Inf"


def test_token_auth_refuses_a_request_without_the_key(torchserve_deployment):
    url = f"{torchserve_deployment.http_url}/predictions/text_stats"
    request = urllib.request.Request(url, data=b'{"text": ["a"]}', headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code in (400, 401)
    assert "Token Authorization failed" in caught.value.read().decode()
    result = CliRunner().invoke(cli, ["invoke", "text_stats", "--deployment", "suite-ts", "-d", '{"text": ["a b"]}', "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["outputs"]["n_words"] == [[2]]


def test_a_malformed_request_gets_a_4xx_of_its_own(torchserve_deployment):
    with mfn.Client("suite-ts") as client:
        with pytest.raises(InvokeError, match=r"HTTP 400: input 'features' has shape \[1, 3\], declared \[batch, 4\]"):
            client.infer("mlp", {"features": [[1.0, 2.0, 3.0]]})
        assert client.infer("mlp", {"features": [1, 2, 3, 4]})["probs"].shape == (1, 3)


def test_versions_are_served_side_by_side_and_the_default_can_be_switched(torchserve_deployment):
    runner = CliRunner()

    def served_by(*extra: str) -> int:
        result = runner.invoke(cli, ["invoke", "versioned", "--deployment", "suite-ts", "-d", '{"x": [0]}', "--json", *extra])
        assert result.exit_code == 0, result.output
        return json.loads(result.output)["outputs"]["served_by"][0][0]

    assert (served_by("--version", "1"), served_by("--version", "2", "--protocol", "grpc")) == (1, 2)
    assert served_by() == 2  # the newest, as on Triton
    try:
        result = runner.invoke(cli, ["set-default", "versioned", "1", "--deployment", "suite-ts"])
        assert result.exit_code == 0 and "versioned v1 is now the default on suite-ts" in result.output
        assert served_by() == 1
    finally:
        # The deployment is shared by the session's tests: leave its default as it was.
        assert runner.invoke(cli, ["set-default", "versioned", "2", "--deployment", "suite-ts"]).exit_code == 0


def ready_worker_pids(deployment, model: str) -> list[int]:
    """The pids of a model's workers once all are READY (a worker restarting from an earlier kill is not)."""
    token = read_key(deployment, "management")
    request = urllib.request.Request(f"{management_url(deployment)}/models/{model}", headers={"Authorization": f"Bearer {token}"})

    def ready_workers() -> list[dict] | None:
        with urllib.request.urlopen(request, timeout=10) as response:
            (description,) = json.load(response)
        workers = description["workers"]
        return workers if workers and all(worker["status"] == "READY" for worker in workers) else None

    return [int(worker["pid"]) for worker in wait_for(ready_workers, 30, f"every worker of {model} to be READY")]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_killed_worker_is_survived_by_a_bounded_retry(torchserve_deployment, protocol):
    worker_pids = ready_worker_pids(torchserve_deployment, "text_stats")
    for pid in worker_pids:
        os.kill(pid, signal.SIGKILL)
    started = time.monotonic()
    with mfn.Client("suite-ts", protocol=protocol, timeout_s=5.0, retries=4) as client:
        answer = client.infer("text_stats", {"text": ["still here"]})
    assert answer["n_words"].tolist() == [[2]]
    assert time.monotonic() - started < 5.0 * 5 + 10  # the retry policy's bound: attempts x timeout + backoff


def test_no_auth_opens_inference_and_nothing_else_even_to_another_user(tmp_path):
    mfn.package(TEXT_STATS, tmp_path, server="torchserve")
    deployment = deployments.deploy(tmp_path, name="ts-open", auth=False, drain_timeout_s=0)
    try:
        public = f"http://127.0.0.1:{deployment.public_port('http')}/predictions/text_stats"
        assert public != f"{deployment.http_url}/predictions/text_stats"  # served through the proxy
        call = urllib.request.Request(public, data=b'{"text": ["open to all"]}', headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(call, timeout=30) as answer:
            assert json.load(answer)["n_words"] == [[3]]
        seen = readable_by_another_user()
        assert b"ts.model_server" in seen  # the server's command line was readable
        for api in ("inference", "management"):
            assert read_key(deployment, api).encode() not in seen
        management = f"http://127.0.0.1:{deployment.ports['management']}"
        for method, url in (("POST", f"{management}/models?url=file:///tmp/evil.mar"), ("GET", f"{management}/models"),
                            ("PUT", f"{management}/models/text_stats?min_worker=0"),
                            ("POST", f"{deployment.http_url}/predictions/text_stats")):
            curl = as_another_user(["curl", "-s", "-X", method, "-w", "\n%{http_code}", url])
            body, _, status = curl.stdout.decode().rpartition("\n")
            assert status in ("400", "401") and "Token Authorization failed" in body, (method, url, curl)
    finally:
        deployments.undeploy("ts-open")


def test_a_deploy_whose_worker_sockets_would_not_fit_is_refused_before_torchserve_starts(tmp_path, monkeypatch):
    """A long MFN_HOME and deployment name would put TorchServe's worker sockets past a Unix socket's 107 bytes."""
    mfn.package(TEXT_STATS, tmp_path / "store", server="torchserve")
    home = tmp_path / ("h" * 40)
    home.mkdir()
    monkeypatch.setenv("MFN_HOME", str(home))
    result = CliRunner().invoke(cli, ["deploy", str(tmp_path / "store"), "--name", "n" * 63])
    assert result.exit_code == 1, result.output
    assert "TorchServe's worker sockets would have" in result.output and "set MFN_HOME to a shorter directory" in result.output
    assert not (home / "deployments").exists() or not list((home / "deployments").iterdir())


def test_the_frontend_maps_a_class_data_archive_once_one_was_built(tmp_path):
    """The first start of this MFN_HOME's TorchServe lists the classes it loads and an archive is built from them
    in the background; later starts map it (mfn.servers.torchserve.class_data)."""
    import psutil

    from mfn.local.supervision import read_status
    from mfn.servers.torchserve import class_data
    from mfn.servers.torchserve.launch import find_java_home

    mfn.package(TEXT_STATS, tmp_path, server="torchserve")
    archive, _ = class_data.paths(find_java_home())
    if not archive.is_file():
        deployments.deploy(tmp_path, name="cds-first", drain_timeout_s=0)
        deployments.undeploy("cds-first")
        wait_for(archive.is_file, 120, "the class-data archive to be built")
    deployment = deployments.deploy(tmp_path, name="cds", drain_timeout_s=0)
    try:
        server = psutil.Process(read_status(deployment).server_pid)
        (java,) = [process for process in [server, *server.children(recursive=True)] if process.name() == "java"]
        assert str(archive) in {mapping.path for mapping in java.memory_maps()}
        with mfn.Client("cds") as client:
            assert client.infer("text_stats", {"text": [["mapped classes"]]})["n_words"].tolist() == [[2]]
    finally:
        deployments.undeploy("cds")
