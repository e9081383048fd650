"""Pure parts of the version rule and the operator commands: which versions a policy serves, which versions a
deployment serves and which is the default (mfn.local.versions), refusals, retries, load progress."""

import time

import pytest

import mfn
from mfn.client.retry import retryable
from mfn.errors import CallError, DeployError, MfnError
from mfn.local.launching import with_progress
from mfn.progress import LOGGER, shown_by, step
from mfn.local.versions import ServedVersions, VersionChoices, check_packaged, check_served, plan_versions


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

    with pytest.raises(DeployError, match="setup failed"), shown_by(notes.append):
        with_progress(slow_failure, "m: still loading", timeout_s=5, every_s=0.1)
    assert len(notes) >= 2 and all(note.startswith("m: still loading (") and "of at most 5 s" in note for note in notes)
    quiet = []
    with shown_by(quiet.append):
        with_progress(lambda: None, "m: still loading", timeout_s=5, every_s=0.1)
    assert quiet == []


def test_progress_reaches_a_listener_through_logging_and_nothing_else_is_changed(caplog):
    import logging

    level = LOGGER.level
    seen = []
    with shown_by(seen.append), caplog.at_level(logging.INFO, logger="mfn.progress"):
        step("loading mlp ...")
    assert seen == ["loading mlp ..."] and caplog.messages == ["loading mlp ..."]
    assert LOGGER.level == level and not any(type(handler).__name__ == "_Forward" for handler in LOGGER.handlers)
    step("nobody listens")
    assert seen == ["loading mlp ..."]


ALL = mfn.VersionPolicy(kind="all")
NEWEST = mfn.VersionPolicy()


@pytest.mark.parametrize(("packaged", "policy", "choices", "served"), [
    # The package decides: the newest answers, whichever server.
    ([1], NEWEST, VersionChoices(), ServedVersions((1,), 1)),
    ([1, 2], NEWEST, VersionChoices(), ServedVersions((2,), 2)),
    ([1, 2], ALL, VersionChoices(), ServedVersions((1, 2), 2)),
    # A version loaded by name stays beside the policy's, and the newest still answers.
    ([1, 2, 3], NEWEST, VersionChoices(added=frozenset({1})), ServedVersions((1, 3), 3)),
    # One unloaded by name stays out, also when the policy names it.
    ([1, 2, 3], ALL, VersionChoices(removed=frozenset({3})), ServedVersions((1, 2), 2)),
    # set-default holds while its version is served, also against newer ones...
    ([1, 2, 3], ALL, VersionChoices(default=1), ServedVersions((1, 2, 3), 1)),
    # ...and the newest answers while it is not (a redeploy of a package whose policy no longer serves it).
    ([1, 2, 3], NEWEST, VersionChoices(default=1), ServedVersions((3,), 3)),
    # A version no longer packaged is not served, whatever was chosen.
    ([2, 3], NEWEST, VersionChoices(added=frozenset({1})), ServedVersions((3,), 3)),
    ([1], NEWEST, VersionChoices(removed=frozenset({1})), ServedVersions((), None)),
])
def test_the_version_rule_gives_the_versions_to_serve_and_the_default(packaged, policy, choices, served):
    assert plan_versions(packaged, policy, choices) == served


def test_loading_and_unloading_a_version_undo_each_other_and_unloading_the_default_forgets_it():
    choices = VersionChoices(default=2).adding(1)
    assert (choices.added, choices.removed, choices.default) == ({1}, set(), 2)
    choices = choices.removing(2)
    assert (choices.removed, choices.default) == ({2}, None)
    assert choices.adding(2).removed == set()


def test_a_version_that_is_not_served_is_refused_with_the_versions_there_are():
    with pytest.raises(MfnError, match=r"cannot unload m v9: that version does not exist \(it serves v2, v3; packaged, "
                                       r"not loaded: v1 \(`mfn load m --version 1` loads one\)\)"):
        check_served("unload", "m", 9, [2, 3], [1, 2, 3])
    with pytest.raises(MfnError, match=r"m v1: that version is packaged but not loaded"):
        check_served("set the default to", "m", 1, [2, 3], [1, 2, 3])
    check_served("unload", "m", 2, [2, 3], [1, 2, 3])
    with pytest.raises(MfnError, match=r"m has no version 4 in /store \(packaged: v1, v2\)"):
        check_packaged("m", 4, [1, 2], "/store")


@pytest.mark.parametrize("message", [
    "gRPC UNAVAILABLE: Request for unknown model: 'm' version 1 is not at ready state",
    "HTTP 503: Request for unknown model: 'm' version 1 is not at ready state",
])
def test_a_version_the_server_does_not_serve_is_not_retried(message):
    assert not retryable(CallError(message, message.split()[1].rstrip(":")))
    assert retryable(CallError("gRPC UNAVAILABLE: failed to connect to all addresses", "UNAVAILABLE"))


def test_every_operator_action_has_its_function_and_the_mailbox_names_them_all():
    from mfn.local.commands import _CARRIED_OUT
    from mfn.local.operations import OPERATIONS, Action

    assert set(_CARRIED_OUT) == set(Action)
    assert OPERATIONS == ("load", "unload", "reload", "scale", "set-default")
    assert Action("set-default") == "set-default" and str(Action.SET_DEFAULT) == "set-default"
