"""Answers as bytes for a shared cache: a small JSON header and the arrays' raw bytes, never pickle (whoever can
write to the cache must not be able to run code in the server that reads it)."""

from __future__ import annotations

import json
import struct

import numpy as np

from mfn.handlers.base import Arrays

MAGIC = b"mfnA1"
_LENGTH = struct.Struct("<I")
TEXT = "BYTES"


def answer_bytes(answer: Arrays) -> bytes:
    """One answer as bytes: MAGIC, header length, header [[name, dtype, shape, payload bytes]...], payloads."""
    header, payloads = [], []
    for name, array in answer.items():
        if array.dtype.kind in "OSU":
            items = [item.encode() if isinstance(item, str) else bytes(item) for item in array.reshape(-1)]
            payload = b"".join(_LENGTH.pack(len(item)) + item for item in items)
            dtype = TEXT
        else:
            payload = np.ascontiguousarray(array).tobytes()
            dtype = array.dtype.str
        header.append([name, dtype, list(array.shape), len(payload)])
        payloads.append(payload)
    head = json.dumps(header, separators=(",", ":")).encode()
    return b"".join([MAGIC, _LENGTH.pack(len(head)), head, *payloads])


def answer_from_bytes(data: bytes) -> Arrays:
    """The answer `answer_bytes` wrote; read-only arrays over `data`.

    Raises:
        ValueError: `data` is not an answer mfn wrote (another program's key, or a damaged value).
    """
    if not data.startswith(MAGIC):
        raise ValueError("not an mfn cache entry")
    try:
        (head_length,) = _LENGTH.unpack_from(data, len(MAGIC))
        offset = len(MAGIC) + _LENGTH.size
        header = json.loads(data[offset:offset + head_length])
        offset += head_length
        answer = {}
        for name, dtype, shape, size in header:
            payload = memoryview(data)[offset:offset + size]
            offset += size
            answer[name] = _text_array(payload, shape) if dtype == TEXT else \
                np.frombuffer(payload, dtype=np.dtype(dtype)).reshape(shape)
    except (struct.error, ValueError, TypeError) as error:
        raise ValueError(f"damaged mfn cache entry: {error}") from error
    if offset != len(data):
        raise ValueError("damaged mfn cache entry: trailing bytes")
    return answer


def _text_array(payload: memoryview, shape: list[int]) -> np.ndarray:
    items, position = [], 0
    while position < len(payload):
        (length,) = _LENGTH.unpack_from(payload, position)
        position += _LENGTH.size
        if position + length > len(payload):
            raise ValueError("text item runs past its payload")
        items.append(bytes(payload[position:position + length]))
        position += length
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array.reshape(shape)


def answer_size(answer: Arrays) -> int:
    """Bytes an answer holds, what a local cache's size limit counts (text items by their length)."""
    return sum(sum(len(item) for item in array.reshape(-1)) if array.dtype.kind == "O" else array.nbytes
               for array in answer.values())
