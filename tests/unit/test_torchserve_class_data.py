"""TorchServe's class-data archive: which JVM options a start gets, and the archive built from a class list."""

from __future__ import annotations

import subprocess

import pytest

from mfn.servers.torchserve import class_data
from mfn.servers.torchserve.launch import config_properties, find_java_home, Ports


@pytest.fixture
def java_home(tmp_path, monkeypatch):
    monkeypatch.setenv("MFN_HOME", str(tmp_path / "home"))
    return find_java_home()


def test_a_start_without_an_archive_lists_its_classes_and_one_with_it_maps_it(java_home):
    archive, class_list = class_data.paths(java_home)
    assert class_data.vm_options(java_home) == (f"-XX:DumpLoadedClassList={class_list}",)
    archive.write_bytes(b"archive")
    assert class_data.vm_options(java_home) == (f"-XX:SharedArchiveFile={archive}", "-Xshare:auto")
    assert oct(archive.parent.stat().st_mode & 0o777) == "0o700"


def test_the_options_reach_the_frontends_jvm_after_mfns_own(java_home):
    properties = config_properties(Ports(1, 2, 3, 4, 5), "/store", auth=True, jvm_heap_mb=256,
                                   jvm_options=class_data.vm_options(java_home))
    (vmargs,) = [line for line in properties.splitlines() if line.startswith("vmargs=")]
    assert vmargs.startswith("vmargs=-Xmx256m -XX:+ExitOnOutOfMemoryError -XX:DumpLoadedClassList=")


def test_no_options_where_the_path_has_whitespace_or_a_build_failed(tmp_path, monkeypatch, java_home):
    archive, _ = class_data.paths(java_home)
    archive.with_suffix(".failed").write_text("the JVM's words")
    assert class_data.vm_options(java_home) == ()
    monkeypatch.setenv("MFN_HOME", str(tmp_path / "a home"))
    assert class_data.vm_options(java_home) == ()


def test_a_list_the_jvm_refuses_leaves_no_archive_and_is_not_tried_again(java_home):
    archive, class_list = class_data.paths(java_home)
    class_list.write_text("no/such/Class\n@not-a-directive\n")
    with pytest.raises(subprocess.CalledProcessError):
        class_data.build(java_home)
    assert not archive.exists() and class_data.vm_options(java_home) == ()
    assert sorted(archive.parent.iterdir()) == sorted([class_list, archive.with_suffix(".failed")])  # no scratch left
