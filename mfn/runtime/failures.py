"""Server-side logs of handler failures: the same lines on both servers, with the request id and traceback."""

from __future__ import annotations

import logging
import traceback
from pathlib import Path

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
        detail = "\n" + handler_traceback(cause)
    logger.error("%s v%s request %s: %s%s", spec.name, spec.version, request_id or "-", failure.message, detail)


_MFN_ROOT = Path(__file__).resolve().parents[1]
# mfn's frames that only lead to the handler's code; the built-in handlers (mfn/handlers/onnx.py, ...) are the
# handler's code, and their frames stay.
_LEADING_IN = (("runtime",), ("model_repository",), ("archiver",), ("handlers", "base.py"), ("handlers", "loading.py"),
               ("packaging.py",), ("model_files.py",))


def handler_traceback(error: BaseException) -> str:
    """A handler's exception as a traceback from the handler's own frames on, and its final line once.

    mfn's frames that lead to the handler's code (the batch loop, an adapter, packaging's checks) are left out,
    and so is any exception of mfn's own in the chain (the failure that wraps the handler's): what remains is
    what the handler's author can act on. Exceptions the handler chained itself (`raise ... from ...`) stay, as
    Python prints them. An exception with no frame of the handler's keeps all its frames.
    """
    sections: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = error
    link = ""
    while current is not None and id(current) not in seen and (current is error or not _is_mfns(current)):
        seen.add(id(current))
        frames = traceback.extract_tb(current.__traceback__)
        first = next((index for index, frame in enumerate(frames) if not _leads_to_handler(frame.filename)), 0)
        kept = frames[first:]
        text = ("Traceback (most recent call last):\n" + "".join(traceback.format_list(kept)) if kept else "") + \
            "".join(traceback.format_exception_only(type(current), current))
        sections.append(text + link)
        if current.__cause__ is not None:
            current, link = current.__cause__, "\nThe above exception was the direct cause of the following exception:\n\n"
        elif current.__context__ is not None and not current.__suppress_context__:
            current, link = current.__context__, "\nDuring handling of the above exception, another exception occurred:\n\n"
        else:
            current = None
    return "".join(reversed(sections)).rstrip()


def _leads_to_handler(filename: str) -> bool:
    try:
        parts = Path(filename).resolve().relative_to(_MFN_ROOT).parts
    except ValueError:
        return False
    return any(parts[: len(prefix)] == prefix for prefix in _LEADING_IN)


def _is_mfns(error: BaseException) -> bool:
    return type(error).__module__.split(".")[0] == "mfn"
