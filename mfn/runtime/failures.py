"""Server-side logs of handler failures: the same lines on both servers, with the request id and traceback."""

from __future__ import annotations

import logging
import traceback

from mfn.runtime.loop import RequestFailure
from mfn.spec import ModelSpec

# Failures of the handler or of mfn itself; a client's malformed request (4xx) is the client's to read.
LOGGED_STATUS = 500
# Set on an exception once its traceback is logged: a batch failure shared by several requests logs it once.
_LOGGED = "_mfn_traceback_logged"


def log_failure(logger: logging.Logger, spec: ModelSpec, request_id: str | None, failure: RequestFailure) -> None:
    """One ERROR record for a request the handler failed: model, version, request id, the reason the client got,
    and the traceback of the exception behind it (the first time that exception is logged). Adapters call it
    where they answer a failure, so successful requests cost nothing."""
    if failure.status < LOGGED_STATUS:
        return
    cause = failure.__cause__
    detail = ""
    if cause is not None and not getattr(cause, _LOGGED, False):
        setattr(cause, _LOGGED, True)
        detail = "\n" + "".join(traceback.format_exception(type(cause), cause, cause.__traceback__)).rstrip()
    logger.error("%s v%s request %s: %s%s", spec.name, spec.version, request_id or "-", failure.message, detail)
