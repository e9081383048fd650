"""Pure parts of the version rule and the operator commands: which versions a policy serves, load progress."""

import time

import pytest

import mfn
from mfn.local.launching import with_progress
from mfn.errors import DeployError


@pytest.mark.parametrize(("policy", "served"), [
    (mfn.VersionPolicy(), [7]),
    (mfn.VersionPolicy(kind="latest", latest=2), [7, 3]),
    (mfn.VersionPolicy(kind="all"), [7, 3, 1]),
    (mfn.VersionPolicy(kind="specific", versions=(1, 9)), [1]),
])
def test_a_version_policy_selects_the_versions_both_servers_serve_newest_first(policy, served):
    assert policy.select([1, 7, 3]) == served


def test_a_slow_load_reports_progress_until_it_ends_and_its_error_reaches_the_caller():
    notes = []

    def slow_failure():
        time.sleep(0.35)
        raise DeployError("setup failed")

    with pytest.raises(DeployError, match="setup failed"):
        with_progress(slow_failure, notes.append, "m: still loading", timeout_s=5, every_s=0.1)
    assert len(notes) >= 2 and all(note.startswith("m: still loading (") and "of at most 5 s" in note for note in notes)
    quiet = []
    with_progress(lambda: None, quiet.append, "m: still loading", timeout_s=5, every_s=0.1)
    assert quiet == []
