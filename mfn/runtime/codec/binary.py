"""The KServe v2 binary tensor data extension: a JSON header followed by the tensors' raw bytes.

A body is `<JSON header><buffer of tensor 1><buffer of tensor 2>...`. The header is an ordinary KServe v2
document whose binary entries carry `"parameters": {"binary_data_size": <bytes>}` instead of "data", in the
order their buffers follow; its length travels in the `Inference-Header-Content-Length` HTTP header (on
TorchServe's gRPC API: an input-map entry of that name). Numbers are little-endian, row-major; BOOL is one
byte per element; each BYTES element is a 4-byte little-endian length and then its bytes. This is the wire
format Triton and tritonclient use, so mfn sends the same bytes to both servers.

An answer says which of its outputs are binary in the same way; a client asks for binary outputs with
`"parameters": {"binary_data_output": true}` (all outputs) or per output in "outputs".
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

from mfn.handlers.dtypes import TRITON_TO_NUMPY, canonical_dtype
from mfn.runtime.codec.kserve import element_count
from mfn.runtime.codec.limits import STATUS_TOO_LARGE
from mfn.runtime.loop import RequestFailure

HEADER_LENGTH = "Inference-Header-Content-Length"
OCTET_STREAM = "application/octet-stream"
BINARY_DATA_SIZE = "binary_data_size"
_ELEMENT_LENGTH = struct.Struct("<I")
_DIGITS = re.compile(r"[0-9]{1,19}")  # ASCII digits only: str.isdigit also takes "²", which int() refuses
# The header is ASCII (names, shapes, datatypes), so a latin-1 reading of any prefix is exact up to its end.
_HEADER_DECODER = json.JSONDecoder()
_LITTLE_ENDIAN = {name: np.dtype(dtype).newbyteorder("<") for name, dtype in TRITON_TO_NUMPY.items() if name != "BYTES"}


def header_length(value: Any, body_length: int) -> int:
    """The JSON header's length from the header (or gRPC entry) that carries it.

    Raises:
        RequestFailure: (400) when it is not a whole number within the body.
    """
    text = value.decode("latin-1") if isinstance(value, (bytes, bytearray)) else str(value)
    if not _DIGITS.fullmatch(text.strip(" \t")) or not 0 < int(text) <= body_length:
        raise RequestFailure(f"{HEADER_LENGTH} is {text[:20]!r}: it must be the length in bytes of the JSON header "
                             f"at the start of the body (1 to {body_length:,})")
    return int(text)


def binary_size(entry: dict, what: str) -> int | None:
    """An entry's `binary_data_size`, or None when its values are in "data".

    Raises:
        RequestFailure: (400) when the size is not a non-negative integer or the entry has both forms.
    """
    parameters = entry.get("parameters")
    if not isinstance(parameters, dict) or BINARY_DATA_SIZE not in parameters:
        return None
    size = parameters[BINARY_DATA_SIZE]
    if type(size) is not int or size < 0:
        raise RequestFailure(f'{what}: "{BINARY_DATA_SIZE}" must be a byte count, got {size!r}')
    if "data" in entry:
        raise RequestFailure(f'{what} has both "data" and "{BINARY_DATA_SIZE}": send its values one way')
    return size


def read_tensor(buffer: memoryview, datatype: str, shape: list[int], what: str, max_element: int | None) -> np.ndarray:
    """One tensor from its raw bytes; numbers are read in place (no copy), so the array is read-only.

    Raises:
        RequestFailure: (400) when the byte count does not match the shape (counted without overflow, so a
            huge shape cannot pass for an empty one), 413 past the BYTES element limit.
    """
    count = element_count(shape, what)
    if datatype == "BYTES":
        if count * _ELEMENT_LENGTH.size > len(buffer):
            raise RequestFailure(f"{what}: {len(buffer):,} bytes of BYTES data, but shape {shape} has {count:,} elements, "
                                 f"which need at least {count * _ELEMENT_LENGTH.size:,} (a 4-byte length each)")
        return _read_bytes_elements(buffer, count, what, max_element).reshape(shape)
    dtype = _LITTLE_ENDIAN[datatype]
    if len(buffer) != count * dtype.itemsize:
        raise RequestFailure(f"{what}: {len(buffer):,} bytes of {datatype} data, but shape {shape} needs "
                             f"{count * dtype.itemsize:,} ({count:,} values of {dtype.itemsize} bytes)")
    array = np.frombuffer(buffer, dtype=dtype).reshape(shape)
    return array if dtype.isnative else array.astype(dtype.newbyteorder("="))


def tensor_bytes(array: np.ndarray, datatype: str) -> bytes | memoryview:
    """An array's raw bytes in the wire format of `datatype` (the array's values already of that type)."""
    if datatype == "BYTES":
        parts = []
        for item in array.ravel().tolist():
            data = item if isinstance(item, bytes) else bytes(item) if isinstance(item, (bytearray, np.bytes_)) else str(item).encode("utf-8")
            parts.append(_ELEMENT_LENGTH.pack(len(data)))
            parts.append(data)
        return b"".join(parts)
    contiguous = np.ascontiguousarray(array, dtype=_LITTLE_ENDIAN[datatype])
    return memoryview(contiguous).cast("B")  # type: ignore[arg-type]  # numpy 1.x's stubs lack the buffer protocol


def encode_body(document: dict[str, Any], buffers: list[bytes | memoryview]) -> tuple[bytes, int]:
    """A whole binary body and its header length: `document` as JSON, then the buffers in order."""
    header = json.dumps(document, separators=(",", ":")).encode("ascii")
    return b"".join([header, *buffers]), len(header)


def split_answer(body: bytes, length: int | None) -> tuple[dict[str, Any], memoryview]:
    """A binary answer's header document and the bytes after it.

    Without a known header length (TorchServe's gRPC answer has no headers), the header is read as the one
    JSON object the body starts with.

    Raises:
        RequestFailure: when the body does not start with a JSON object.
    """
    view = memoryview(body)
    try:
        if length is not None:
            document = json.loads(bytes(view[:length]))
        else:
            document, length = _leading_object(body)
    except (ValueError, RecursionError) as error:
        raise RequestFailure(f"binary answer does not start with a JSON header: {error}") from None
    if not isinstance(document, dict):
        raise RequestFailure("binary answer's header is not a JSON object")
    return document, view[length:]


def request_document(arrays: Mapping[str, np.ndarray], datatypes: Mapping[str, str] | None,
                     binary_outputs: bool = True) -> tuple[dict[str, Any], list[bytes | memoryview]]:
    """A binary request's header document and buffers; datatypes not given are the arrays' own."""
    entries, buffers = [], []
    for name, array in arrays.items():
        datatype = (datatypes or {}).get(name) or ("BYTES" if array.dtype.kind in "OSU" else canonical_dtype(array.dtype))
        buffer = tensor_bytes(array, datatype)
        entries.append({"name": name, "shape": list(array.shape), "datatype": datatype,
                        "parameters": {BINARY_DATA_SIZE: len(buffer)}})
        buffers.append(buffer)
    document: dict[str, Any] = {"inputs": entries}
    if binary_outputs:
        document["parameters"] = {"binary_data_output": True}
    return document, buffers


def wants_binary(document: dict[str, Any], outputs: list[str]) -> frozenset[str]:
    """The outputs a request asks to receive as binary data."""
    parameters = document.get("parameters")
    everything = isinstance(parameters, dict) and parameters.get("binary_data_output") is True
    requested = document.get("outputs")
    if not isinstance(requested, list):
        return frozenset(outputs) if everything else frozenset()
    chosen = set()
    for entry in requested:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            continue
        parameters = entry.get("parameters")
        flag = parameters.get("binary_data") if isinstance(parameters, dict) else None
        if flag is True or (flag is None and everything):
            chosen.add(entry["name"])
    return frozenset(chosen)


def check_datatype(given: Any, what: str) -> str:
    """A binary entry's datatype, which binary data cannot do without.

    Raises:
        RequestFailure: (400) when it is missing or not a KServe v2 datatype.
    """
    if not isinstance(given, str) or given not in TRITON_TO_NUMPY:
        raise RequestFailure(f'{what} is binary and needs "datatype", one of {", ".join(TRITON_TO_NUMPY)}; got {given!r}')
    return given


def _read_bytes_elements(buffer: memoryview, count: int, what: str, max_element: int | None) -> np.ndarray:
    elements = np.empty(count, dtype=object)
    offset, end = 0, len(buffer)
    for index in range(count):
        if offset + 4 > end:
            raise RequestFailure(f"{what}: BYTES data ends after {index} of {count} elements: each element is a "
                                 "4-byte little-endian length and then its bytes")
        (length,) = _ELEMENT_LENGTH.unpack_from(buffer, offset)
        if max_element is not None and length > max_element:
            raise RequestFailure(f"{what} has an element of {length:,} bytes, over the limit of {max_element:,}: "
                                 "send smaller elements", STATUS_TOO_LARGE)
        offset += 4
        if offset + length > end:
            raise RequestFailure(f"{what}: BYTES element {index} says {length:,} bytes, but only {end - offset:,} follow")
        elements[index] = bytes(buffer[offset:offset + length])
        offset += length
    if offset != end:
        raise RequestFailure(f"{what}: {end - offset:,} bytes left over after {count} BYTES elements: "
                             f"\"{BINARY_DATA_SIZE}\" must cover exactly the tensor's elements")
    return elements


def _leading_object(body: bytes) -> tuple[Any, int]:
    prefix = 4096
    while True:
        text = bytes(body[:prefix]).decode("latin-1")
        try:
            return _HEADER_DECODER.raw_decode(text)
        except ValueError:
            if prefix >= len(body):
                raise
            prefix *= 4
