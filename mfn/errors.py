"""Errors mfn raises for the user to act on; the CLI prints their message without a traceback."""

from __future__ import annotations


class MfnError(Exception):
    """A problem the user can fix; the message says what failed and what to do."""


class HandlerError(MfnError):
    """The handler cannot be imported, is incomplete, or misbehaves on a sample batch."""


class SpecError(MfnError):
    """The handler's declarations do not form a valid model spec."""


class DeployError(MfnError):
    """A server could not be started or a model could not be loaded."""


class InvokeError(MfnError):
    """An inference request failed; the message carries the server's reason."""


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (libraries often add pages of context), or its type."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
