"""Tiny JSON-over-HTTP helpers for health and repository calls, so deploying needs no client library."""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request


def request(
    method: str, url: str, timeout_s: float, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, str]:
    """Return (status, body text); connection failures come back as status 0 with the reason."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        # HTTPException: a server that closed the connection mid-answer (e.g. while stopping).
        return 0, str(getattr(error, "reason", error)) or type(error).__name__


def error_message(body: str | bytes | dict, first_line: bool = False, fallback: str = "") -> str:
    """The reason in a server's error body, the one reader for all of them: `error` (KServe v2, Triton, mfn's
    adapters) or `message` (TorchServe's {"code", "type", "message"}); the body itself when it is not JSON.

    With `first_line`, only its first line (TorchServe appends its Java exception's class name on a second);
    `fallback` when there is no text at all.
    """
    document: object = body
    if isinstance(body, (bytes, str)):
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        try:
            document = json.loads(text)
        except (ValueError, RecursionError):
            document = text
    text = str(document.get("error") or document.get("message") or document) if isinstance(document, dict) else str(document)
    if first_line:
        lines = text.strip().splitlines()
        text = lines[0] if lines else ""
    return text or fallback
