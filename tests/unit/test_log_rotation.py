"""Server logs rotate by copy-and-truncate while the server keeps appending to them."""

from mfn.servers.process import rotate_log


def test_a_log_past_its_limit_is_copied_aside_and_truncated_in_place(tmp_path):
    log = tmp_path / "server.log"
    with log.open("ab") as server:  # the server's own handle, opened as start_detached opens it
        server.write(b"x" * 100)
        server.flush()
        assert not rotate_log(log, max_bytes=100)  # at the limit: left alone
        server.write(b"y")
        server.flush()
        assert rotate_log(log, max_bytes=100, keep=2)
        assert (tmp_path / "server.log.1").read_bytes() == b"x" * 100 + b"y"
        server.write(b"after")
        server.flush()
    assert log.read_bytes() == b"after"  # appended at the new end, not at the old offset


def test_older_copies_shift_up_and_the_oldest_is_dropped(tmp_path):
    log = tmp_path / "server.log"
    for generation in range(4):
        log.write_bytes(bytes([65 + generation]) * 10)
        assert rotate_log(log, max_bytes=5, keep=2)
    assert (tmp_path / "server.log.1").read_bytes() == b"D" * 10
    assert (tmp_path / "server.log.2").read_bytes() == b"C" * 10
    assert not (tmp_path / "server.log.3").exists()
    assert not rotate_log(tmp_path / "missing.log")
