"""Limits on JSON bodies, checked before any parsing work, and the one JSON parser that honours them.

json.loads recurses once per nesting level: a body nested ~1,000 deep raises RecursionError, and a
hostile body costs as much to parse as it is long. So a body is measured first, with two C-speed
passes (`bytes.count`, and numpy over the bracket characters only when the count allows deep nesting),
and refused before json.loads sees it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from mfn.runtime.loop import RequestFailure

MIB = 1024 * 1024
MAX_BODY_BYTES = 64 * MIB
MAX_BYTES_ELEMENT = 16 * MIB
# A KServe v2 body wraps each tensor's data in three levels: {"inputs": [{"data": ...}]}.
KSERVE_WRAPPER_DEPTH = 3
# Room for optional nesting the protocol allows around the data, e.g. "parameters" objects.
DEPTH_MARGIN = 2
# numpy's own limit on dimensions: the rank to assume where a tensor's declared rank is not known.
MAX_RANK = 32
STATUS_TOO_LARGE = 413

# A JSON string literal, escapes included: brackets inside strings do not nest.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_OPEN_FOLDED, _CLOSE_FOLDED = ord("{"), ord("}")  # "[" | 0x20 == "{" and "]" | 0x20 == "}"
# Built once: json.loads and json.dumps rebuild theirs per call for non-default arguments. The codec's
# own documents hold no cycles, so the encoder need not look for them.
_DECODER = json.JSONDecoder()
_ENCODER = json.JSONEncoder(separators=(",", ":"), check_circular=False)


@dataclass(frozen=True)
class Limits:
    """What one JSON body may hold; the same numbers on every server and in the client.

    Args:
        max_body_bytes: Largest request body accepted.
        max_bytes_element: Largest single BYTES element, after UTF-8 encoding.
        depth_margin: Nesting levels allowed beyond what the declared tensors and the KServe v2 wrapper need.
    """

    max_body_bytes: int = MAX_BODY_BYTES
    max_bytes_element: int = MAX_BYTES_ELEMENT
    depth_margin: int = DEPTH_MARGIN

    def max_depth(self, rank: int) -> int:
        """Deepest JSON nesting allowed for tensors of `rank` dimensions (batch included)."""
        return KSERVE_WRAPPER_DEPTH + rank + self.depth_margin


DEFAULT_LIMITS = Limits()


def parse_json(body: bytes | bytearray, limits: Limits, max_depth: int, what: str = "request body") -> Any:
    """Parse a JSON body after checking its size and nesting against the limits.

    Non-finite numbers are read as JSON's common extension writes them (NaN, Infinity, -Infinity),
    the form Triton reads and writes too.

    Raises:
        RequestFailure: 413 for a body over `limits.max_body_bytes`, 400 for one nested deeper than
            `max_depth` or that is not JSON.
    """
    if len(body) > limits.max_body_bytes:
        raise RequestFailure(
            f"{what} of {len(body):,} bytes exceeds the limit of {limits.max_body_bytes:,}: "
            "send fewer rows per request", STATUS_TOO_LARGE,
        )
    depth = nesting_depth(body, max_depth)
    if depth > max_depth:
        raise RequestFailure(
            f"{what} nests {depth} levels deep, more than the {max_depth} its tensors need: "
            "send each tensor as rows of values (or flat with a shape)"
        )
    try:
        return _DECODER.decode(body.decode("utf-8"))
    except (ValueError, RecursionError) as error:
        raise RequestFailure(f"{what} is not JSON: {error}") from None


def to_json(document: Any) -> bytes:
    """A document built by the codec as compact JSON (non-finite floats as NaN, Infinity, -Infinity)."""
    return _ENCODER.encode(document).encode()


def nesting_depth(body: bytes | bytearray, limit: int) -> int:
    """The deepest nesting of arrays and objects in a JSON text, or 0 when it has too few brackets to pass `limit`.

    A body with no more brackets than `limit` cannot nest deeper, so most bodies cost two counts.
    """
    if body.count(b"[") + body.count(b"{") <= limit:
        return 0
    text = _STRING.sub(b'""', body) if b'"' in body else bytes(body)
    folded = np.frombuffer(text, dtype=np.uint8) | 0x20
    steps = (folded == _OPEN_FOLDED).astype(np.int8) - (folded == _CLOSE_FOLDED)
    steps = steps[steps != 0]
    return int(np.cumsum(steps, dtype=np.int64).max(initial=0))
