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


class CallError(InvokeError):
    """A call to a server failed; `status` says how, for the client's retry policy.

    `status` is the HTTP status ("503") or gRPC code name ("UNAVAILABLE") the server answered with,
    "connection" when no connection was made or it broke before an answer, "timeout" when no answer
    came in time (the request may still run), or "client" for a request the client library refused
    to send.
    """

    def __init__(self, message: str, status: str) -> None:
        super().__init__(message)
        self.status = status
