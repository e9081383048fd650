"""Deployment records: typed settings written and read back, records of an older mfn (settings as strings in
"extra") read, records with fields this mfn does not know refused by file and field."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from mfn.errors import MfnError
from mfn.local.state import Deployment, Prometheus, from_record

BASE = {"name": "demo", "server": "torchserve", "pid": 0, "start_time": None, "host": "127.0.0.1",
        "ports": {"http": 8000, "grpc": 8001, "metrics": 8002}, "models": ["m"], "repository": "/models",
        "log_file": "server.log", "workdir": "/nowhere"}


def test_typed_settings_round_trip_through_the_json_record(tmp_path):
    written = Deployment(**BASE, key_file="/keys.json", drain_timeout_s=2.5, load_timeout_s=60.0, max_request_bytes=1 << 20,
                         track_of="demo-primary", prometheus=Prometheus(pid=42, start_time=7, url="http://127.0.0.1:9090"))
    read = from_record(json.loads(json.dumps(asdict(written))), tmp_path / "demo.json")
    assert read == written and read.endpoints()["prometheus"] == "http://127.0.0.1:9090"


def test_a_record_of_an_older_mfn_is_read_with_its_settings_typed(tmp_path):
    extra = {"key_file": "/keys.json", "drain_timeout_s": "3.0", "load_timeout_s": "120.0", "max_request_bytes": "1048576",
             "response_cache_bytes": "0", "track_of": "demo", "prometheus_pid": "42", "prometheus_start_time": "",
             "prometheus_url": "http://127.0.0.1:9090"}
    read = from_record({**BASE, "extra": extra}, tmp_path / "demo.json")
    assert (read.key_file, read.drain_timeout_s, read.load_timeout_s, read.max_request_bytes, read.track_of) == \
        ("/keys.json", 3.0, 120.0, 1 << 20, "demo")
    assert read.prometheus == Prometheus(pid=42, start_time=None, url="http://127.0.0.1:9090")


def test_a_record_with_fields_this_mfn_does_not_know_is_refused_naming_the_file_and_fields(tmp_path):
    path = Path(tmp_path / "demo.json")
    with pytest.raises(MfnError, match=r"demo\.json has fields this mfn does not know \(options, owner\)"):
        from_record({**BASE, "owner": "someone", "options": {}}, path)
