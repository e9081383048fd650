"""Errors mfn raises for the user to act on; the CLI prints their message without a traceback."""

from __future__ import annotations

from mfn.kinds import StrEnum


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


class NoAnswer(StrEnum):
    """How a call failed without an answer from the server: `CallError.status` where no HTTP status or gRPC code came."""

    CONNECTION = "connection"  # no connection was made, or it broke before an answer
    TIMEOUT = "timeout"  # no answer came in time (the request may still run)
    CLIENT = "client"  # the client library refused to send the request
    UNREACHABLE = "unreachable"  # a URL that refused the connection before it ever answered this client


class CallError(InvokeError):
    """A call to a server failed; `status` says how, for the client's retry policy: the HTTP status ("503") or
    gRPC code name ("UNAVAILABLE") the server answered with, or a `NoAnswer`.
    """

    def __init__(self, message: str, status: str) -> None:
        super().__init__(message)
        self.status = status
