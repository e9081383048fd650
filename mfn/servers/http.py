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


def error_message(body: str) -> str:
    """The `error` field of a KServe v2 error body, or the body itself."""
    try:
        return str(json.loads(body).get("error", body))
    except (ValueError, AttributeError):
        return body
