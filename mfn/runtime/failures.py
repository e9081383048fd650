"""Server-side logs of handler failures: the same lines on both servers, with the request id and traceback."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Sequence

from mfn.runtime.loop import Outcome, RequestFailure
from mfn.spec import ModelSpec

# Failures of the handler or of mfn itself; a client's malformed request (4xx) is the client's to read.
LOGGED_STATUS = 500


def log_failures(
    logger: logging.Logger, spec: ModelSpec, outcomes: Sequence[Outcome], request_id: Callable[[int], str | None]
) -> None:
    """One ERROR record per request the handler failed: model, version, request id (`request_id(index)`, asked
    only for failed requests), the reason the client got, and the traceback of the exception behind it (once per
    exception when it failed several requests). Costs one type check per request when nothing failed."""
    logged: set[int] = set()
    for index, outcome in enumerate(outcomes):
        if type(outcome) is not RequestFailure or outcome.status < LOGGED_STATUS:
            continue
        cause = outcome.__cause__
        detail = ""
        if cause is not None and id(cause) not in logged:
            logged.add(id(cause))
            detail = "\n" + "".join(traceback.format_exception(type(cause), cause, cause.__traceback__)).rstrip()
        logger.error("%s v%s request %s: %s%s", spec.name, spec.version, request_id(index) or "-", outcome.message, detail)
