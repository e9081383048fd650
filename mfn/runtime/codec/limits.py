"""Limits on JSON bodies, checked before any parsing work, and the one JSON parser that honours them.

json.loads recurses once per nesting level: a body nested ~1,000 deep raises RecursionError, and a
hostile body costs as much to parse as it is long. So a body's size and nesting are measured first, in
C-speed passes over its brackets (see nesting_depth), and a body past a limit is refused before
json.loads sees it.
"""

from __future__ import annotations

import json
import re
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mfn.handlers.dtypes import numpy_dtype
from mfn.sizes import MAX_BODY_BYTES, MAX_BYTES_ELEMENT, MIB
from mfn.runtime.loop import RequestFailure

if TYPE_CHECKING:
    from mfn.spec import ModelSpec

# A KServe v2 body wraps each tensor's data in three levels: {"inputs": [{"data": ...}]}.
KSERVE_WRAPPER_DEPTH = 3
# Room for optional nesting the protocol allows around the data, e.g. "parameters" objects.
DEPTH_MARGIN = 2
# numpy's own limit on dimensions: the rank to assume where a tensor's declared rank is not known.
MAX_RANK = 32
STATUS_TOO_LARGE = 413
# What a body limit computed from a spec assumes where the declaration leaves a size open.
VARIABLE_DIM_ELEMENTS = 1024
BYTES_ELEMENT_ASSUMED = 4 * 1024
# A full batch in raw bytes, doubled: room for the JSON header, per-element lengths and a few rows more.
FULL_BATCH_HEADROOM = 2

# Every byte but brackets and quotes, which bytes.translate drops to leave a text's skeleton.
_NOT_SKELETON = bytes(byte for byte in range(256) if byte not in b'[]{}"')
# A string in a skeleton whose escaped quotes are gone.
_QUOTED = re.compile(rb'"[^"]*"')
_FOLD = bytes.maketrans(b"{}", b"[]")
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


def body_limit(spec: ModelSpec) -> int:
    """The request (and answer) body limit a server needs for `spec`, in bytes.

    `spec.max_request_mb` when the handler declares it; otherwise twice a full batch (max_batch_size rows)
    of the larger of its inputs and its outputs as binary tensor data, never below MAX_BODY_BYTES.
    A dimension declared -1 counts as VARIABLE_DIM_ELEMENTS, a BYTES element as BYTES_ELEMENT_ASSUMED;
    models whose variable sizes run larger declare `max_request_mb`. The same batch as JSON text takes
    up to ~5x the bytes (a float is written in up to ~20 characters), so large tensors go binary.
    """
    if spec.max_request_mb is not None:
        return spec.max_request_mb * MIB
    rows = spec.batching.max_batch_size
    needed = FULL_BATCH_HEADROOM * rows * max(_row_bytes(spec.inputs), _row_bytes(spec.outputs))
    return max(MAX_BODY_BYTES, math.ceil(needed / MIB) * MIB)


def _row_bytes(tensors: Any) -> int:
    total = 0
    for tensor in tensors:
        elements = math.prod(dim if dim > 0 else VARIABLE_DIM_ELEMENTS for dim in tensor.shape)
        element = BYTES_ELEMENT_ASSUMED + 4 if tensor.dtype == "BYTES" else numpy_dtype(tensor.dtype).itemsize
        total += elements * element
    return total


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
    """How deep arrays and objects nest in a JSON text: exact above `limit`, at most `limit` otherwise.

    Works on the text's skeleton, its brackets and quotes (one C pass, `bytes.translate`); most bodies
    have too few brackets to need more. Otherwise each `bytes.replace` pass removes the innermost level,
    so a body within the limit costs at most `limit` more passes over its brackets.
    """
    skeleton = body.translate(None, _NOT_SKELETON)
    if skeleton.count(b"[") + skeleton.count(b"{") <= limit:
        return 0  # too few brackets open to nest deeper
    if b"\\" in body:
        # Escaped backslashes and quotes must not open or close a string in the skeleton.
        skeleton = body.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _NOT_SKELETON)
    brackets = _QUOTED.sub(b"", skeleton).translate(_FOLD)  # brackets in strings do not nest; "{" counts as "["
    for depth in range(limit + 1):
        if not brackets:
            return depth
        brackets = brackets.replace(b"[]", b"")
    return _deepest(brackets) + limit + 1


def _deepest(brackets: bytes) -> int:
    """The deepest nesting in a string of "[" and "]" (as many unmatched openers as it has, if unbalanced)."""
    steps = (np.frombuffer(brackets, dtype=np.uint8) == ord("[")).astype(np.int8) * 2 - 1
    return int(np.cumsum(steps, dtype=np.int64).max(initial=0))
