"""One word for the server (`server=` / `--server`), one for the place (`--target local|kubernetes`); the messages a
newcomer meets name the thing and the fix; --json commands fail in JSON; a deployment's directory and lock go with it."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest
from click.testing import CliRunner

import mfn
from mfn.cli.main import cli
from mfn.errors import MfnError
from mfn.local import locking, state
from mfn.servers.process import process_start_time
from mfn.tuning.tuned import load
from tests.conftest import HANDLERS

MIXED = f"{HANDLERS / 'mixed.py'}:Mixed"


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("MFN_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def record(name: str, models: list[str], running: bool = False) -> state.Deployment:
    """A deployment record (no server): running ones carry this process's pid, so they count as running."""
    pid = os.getpid() if running else 2**22 + 1
    deployment = state.Deployment(name=name, server="triton", pid=pid, start_time=process_start_time(pid) if running else None,
                                  host="127.0.0.1", ports={"http": 1, "grpc": 2, "metrics": 3}, models=models,
                                  repository="", log_file="", workdir="")
    state.save(deployment)
    return deployment


def test_package_takes_server_and_its_old_spelling_target_still_works_with_a_warning(tmp_path):
    result = CliRunner().invoke(cli, ["package", MIXED, "-o", str(tmp_path / "new"), "--server", "torchserve", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["server"] == "torchserve" and "deprecated" not in result.stderr
    old = CliRunner().invoke(cli, ["package", MIXED, "-o", str(tmp_path / "old"), "--target", "torchserve"])
    assert old.exit_code == 0, old.output
    assert "for torchserve" in old.stdout
    (notice,) = old.stderr.strip().splitlines()
    assert notice.startswith("warning: --target torchserve is deprecated") and "use --server torchserve" in notice
    with pytest.warns(DeprecationWarning, match=r"pass server="):
        assert mfn.package(MIXED, tmp_path / "python", target="torchserve").server == "torchserve"
    assert sorted(path.name for path in (tmp_path / "python").iterdir()) == sorted(path.name for path in (tmp_path / "new").iterdir())


def test_server_and_target_that_disagree_are_refused():
    result = CliRunner().invoke(cli, ["package", MIXED, "-o", "out", "--server", "triton", "--target", "torchserve"])
    assert result.exit_code == 2 and "--server triton and --target torchserve disagree: give only --server" in result.output


def test_a_tuned_file_of_an_earlier_release_names_its_server_target(tmp_path):
    from mfn.tuning.tuned import Settings, Tuned, save

    path = save(Tuned(model="m", server="torchserve", latency_budget_ms=1, percentile=95, concurrency=1,
                      chosen=Settings(max_batch_size=1), baseline=Settings(max_batch_size=1)), tmp_path / "tuned.json")
    document = json.loads(path.read_text())
    document["target"] = document.pop("server")
    path.write_text(json.dumps(document))
    assert load(path).server == "torchserve"


def test_a_json_command_fails_in_json_on_stdout(home, tmp_path):
    result = CliRunner().invoke(cli, ["verify", str(tmp_path), "--json"])
    assert result.exit_code == 1 and result.stderr == ""
    error = json.loads(result.stdout)
    assert error["exit_code"] == 1 and error["error"].startswith(f"{tmp_path} holds no models")
    usage = CliRunner().invoke(cli, ["invoke", "m", "--json"])  # no --data: a usage error, exit status 2
    assert usage.exit_code == 2 and json.loads(usage.stdout) == {"error": "Missing option '--data' / '-d'.", "exit_code": 2}
    plain = CliRunner().invoke(cli, ["verify", str(tmp_path)])
    assert plain.exit_code == 1 and plain.output.startswith("Error: ")


def test_stats_of_a_model_names_its_deployment(home):
    record("dev", ["mlp", "text_stats"])
    result = CliRunner().invoke(cli, ["stats", "mlp"])
    assert result.exit_code == 1
    assert result.output.strip() == ("Error: 'mlp' is a model, not a deployment: it is served by dev; run `mfn stats dev` "
                                     "(its figures are listed per model)")
    with pytest.raises(MfnError, match="'mlp' is a model, of deployment dev: give the deployment's name"):
        state.get("mlp")


def test_the_client_speaks_python_when_several_deployments_serve_a_model(home):
    record("a", ["mlp"], running=True)
    record("b", ["mlp"], running=True)
    with mfn.Client() as client, pytest.raises(MfnError) as caught:
        client.endpoint("mlp")
    assert 'choose one with mfn.Client("a") (with `mfn invoke`: --deployment a)' in str(caught.value)
    assert "--deployment" in CliRunner().invoke(cli, ["describe", "mlp"]).output


def test_a_model_no_deployment_serves_gets_the_served_ones_and_the_closest(home):
    record("a", ["text_stats", "mlp"], running=True)
    with mfn.Client() as client, pytest.raises(MfnError) as caught:
        client.endpoint("text_stat")
    assert "(served models: mlp, text_stats; did you mean 'text_stats'?)" in str(caught.value)
    assert 'mfn.Client("http://host:port")' in str(caught.value)


def test_a_url_where_nothing_listens_fails_at_once_without_retries(home):
    from mfn.servers.process import free_ports

    (port,) = free_ports(1)
    with mfn.Client(f"http://127.0.0.1:{port}", retries=50) as client, pytest.raises(MfnError) as caught:
        client.infer("mlp", {"x": [[1.0]]})  # 50 retries would wait for minutes
    assert str(caught.value) == (f"mlp: nothing listens at http://127.0.0.1:{port} (connection refused): check the URL's "
                                 "host and port, and that the server runs there")


def test_a_deployments_directory_goes_with_it_and_waiters_lock_the_file_that_is_there(home):
    with locking.exclusive("gone"):
        assert (state.deployment_dir("gone") / "lock").exists()
    assert not state.deployment_dir("gone").exists()
    record("kept", [])
    with locking.exclusive("kept"):
        pass
    assert sorted(path.name for path in state.deployment_dir("kept").iterdir()) == ["deployment.json", "lock"]
    # A waiter on a lock file its holder deletes locks the new file: two holders never overlap.
    inside, overlaps = [], []

    def hold() -> None:
        with locking.exclusive("gone"):
            inside.append(1)
            if len(inside) > 1:
                overlaps.append(1)
            inside.pop()

    entered, failures = [], []

    def counted_hold() -> None:
        try:
            hold()
            entered.append(1)
        except OSError as error:  # a waiter whose directory was removed under it must lock the new one, not fail
            failures.append(error)

    threads = [threading.Thread(target=counted_hold) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert overlaps == [] and failures == [] and len(entered) == 8 and not state.deployment_dir("gone").exists()


def test_the_lock_is_taken_again_by_its_holder_and_a_waiter_can_give_up(home):
    with locking.exclusive("nested"):
        with locking.exclusive("nested"):  # a promotion deploys while it holds the route's turn
            record("nested", [])
        assert (state.deployment_dir("nested") / "lock").exists()  # the inner exit released nothing
        outcome = []

        def wait(give_up_after_s: float) -> None:
            deadline = time.monotonic() + give_up_after_s
            try:
                with locking.exclusive("nested", give_up=lambda: time.monotonic() > deadline):
                    outcome.append("locked")
            except locking.GaveUp as error:
                outcome.append(str(error))

        waiter = threading.Thread(target=wait, args=(0.2,))
        waiter.start()
        waiter.join(timeout=10)
    assert outcome == [f"stopped waiting for {state.deployment_dir('nested') / 'lock'}"]


def test_records_of_the_older_layout_are_refused_naming_the_file_and_what_to_do(home):
    older = state.deployments_dir() / "old.json"
    older.parent.mkdir(parents=True, exist_ok=True)
    older.write_text("{}")
    for attempt in (state.all_deployments, lambda: state.load("old"), lambda: locking.exclusive("old").__enter__()):
        with pytest.raises(MfnError) as caught:
            attempt()
        assert str(caught.value).startswith(f"{older} is a deployment record written by an older mfn")
        assert "`mfn undeploy old`" in str(caught.value) and f"delete {older} and {state.deployments_dir() / 'old'}" in str(caught.value)
    assert older.exists()


def test_default_versions_of_the_older_layout_are_read_until_the_deployment_has_its_own(home):
    (state.mfn_home() / "defaults").mkdir(parents=True, exist_ok=True)
    (state.mfn_home() / "defaults" / "kept.json").write_text('{"mlp": 2}')
    assert state.recorded_defaults("kept") == {"mlp": 2}
    state.record_default("kept", "mlp", 3)
    assert state.recorded_defaults("kept") == {"mlp": 3}
    assert json.loads(state.defaults_file("kept").read_text()) == {"mlp": 3}


def test_mfn_status_beside_an_older_record_says_which_file_and_what_to_do(home):
    older = state.deployments_dir() / "old.json"
    older.parent.mkdir(parents=True)
    older.write_text("{}")
    result = CliRunner().invoke(cli, ["status"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    (line,) = result.output.strip().splitlines()
    assert line == (f"Error: {older} is a deployment record written by an older mfn, which laid out "
                    f"{state.deployments_dir()} differently: undeploy 'old' with that mfn (`mfn undeploy old`), or, "
                    f"if its processes are gone, delete {older} and {state.deployments_dir() / 'old'}")
