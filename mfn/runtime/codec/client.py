"""Request and answer bodies on the client side: what mfn.Client and `mfn invoke` send and read back.

The same rules as the server side (see server.py), applied before anything is sent: a value the server
would refuse is refused here, with the same message, without a round trip.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np

from mfn.runtime.codec import binary
from mfn.runtime.codec.arrays import infer_array, to_array
from mfn.runtime.codec.kserve import decode_entry, encode_entry, entry_datatype, entry_name, entry_shape
from mfn.runtime.codec.limits import DEFAULT_LIMITS, MAX_RANK, Limits, parse_json, to_json
from mfn.runtime.loop import RequestFailure

# An answer is as large as the request made it; only its nesting is checked, so that json.loads cannot recurse away.
ANSWER_LIMITS = Limits(max_body_bytes=sys.maxsize)
_DATA_SHAPES = '{"<input>": [[...]]} or KServe v2 {"inputs": [{"name", "shape", "datatype", "data"}]}'

Declared = Mapping[str, tuple[str, int]]


def to_arrays(inputs: Mapping[str, Any], declared: Declared | None = None, model: str = "the model",
              limits: Limits = DEFAULT_LIMITS) -> dict[str, np.ndarray]:
    """User values (arrays or nested lists) as arrays, with a batch dimension added to a single row.

    Args:
        inputs: Values by input name.
        declared: (datatype, rank with the batch dimension) by input name when the server publishes them
            (Triton); without them, datatypes are inferred and the server casts.
        model: The model's name, for messages.
        limits: Limits on BYTES elements.

    Raises:
        RequestFailure: naming the input and what to send instead.
    """
    if declared is not None:
        unknown = sorted(set(inputs) - set(declared))
        if unknown:
            raise RequestFailure(f"{model} has no input(s) {unknown}; its inputs are {sorted(declared)}")
    arrays = {}
    for name, value in inputs.items():
        what = f"input {name!r}"
        if declared is None:
            arrays[name] = infer_array(value, what, limits.max_bytes_element)
            continue
        datatype, rank = declared[name]
        array = to_array(value, what, datatype, max_element=limits.max_bytes_element)
        arrays[name] = array[None] if array.ndim == rank - 1 else array
    return arrays


def encode_request(arrays: Mapping[str, np.ndarray], datatypes: Mapping[str, str] | None = None) -> bytes:
    """A KServe v2 JSON request; datatypes are written only where given, otherwise the server uses its declared ones."""
    datatypes = datatypes or {}
    entries = [encode_entry(name, array, datatypes.get(name), f"input {name!r}") for name, array in arrays.items()]
    return to_json({"inputs": entries})


def encode_binary_request(arrays: Mapping[str, np.ndarray], datatypes: Mapping[str, str] | None = None) -> tuple[bytes, int]:
    """A KServe v2 request with binary tensor data asking for binary outputs, and its JSON header's length.

    Datatypes not given are the arrays' own; the server converts them to its declared ones by the rules
    JSON numbers follow (integers that do not fit, or fractions for integers, are refused).
    """
    document, buffers = binary.request_document(arrays, datatypes)
    return binary.encode_body(document, buffers)


def read_binary_answer(body: bytes, header_length: int | None, wanted: list[str] | None = None) -> dict[str, np.ndarray]:
    """The outputs of an answer in the binary tensor format (JSON outputs in it too), optionally only `wanted`.

    Binary outputs are read in place from `body` (no copy), so they are read-only arrays.

    Raises:
        RequestFailure: when the answer is malformed.
    """
    document, rest = binary.split_answer(body, header_length)
    return binary_answer_outputs(document, rest, wanted)


def binary_answer_outputs(document: dict[str, Any], rest: memoryview, wanted: list[str] | None = None) -> dict[str, np.ndarray]:
    """The outputs of a binary answer split into its header document and the bytes after it (see read_binary_answer)."""
    entries = document.get("outputs")
    if not isinstance(entries, list):
        raise RequestFailure(f'answer has no "outputs" list: {_short_json(document)}')
    outputs, offset = {}, 0
    for entry in entries:
        name = entry_name(entry, "outputs")
        what = f"output {name!r}"
        size = binary.binary_size(entry, what)
        if size is None:
            array = decode_entry(entry, what, entry_datatype(entry, what, None))
        else:
            datatype = binary.check_datatype(entry.get("datatype"), what)
            array = binary.read_tensor(rest[offset:offset + size], datatype, entry_shape(entry, what), what, None)
            offset += size
        if not wanted or name in wanted:
            outputs[name] = array
    return outputs


def read_answer(body: bytes) -> dict[str, Any]:
    """A server's JSON answer as a document, its nesting checked before parsing.

    Raises:
        RequestFailure: when the answer is not a JSON object.
    """
    document = parse_json(body, ANSWER_LIMITS, ANSWER_LIMITS.max_depth(MAX_RANK), what="answer")
    if not isinstance(document, dict):
        raise RequestFailure(f"answer is a JSON {type(document).__name__}, not an object with \"outputs\"")
    return document


def answer_outputs(document: dict[str, Any], wanted: list[str] | None = None) -> dict[str, np.ndarray]:
    """The outputs of a KServe v2 answer as arrays of their datatypes (BYTES as bytes), optionally only `wanted`.

    Raises:
        RequestFailure: when an output entry is malformed.
    """
    entries = document.get("outputs")
    if not isinstance(entries, list):
        raise RequestFailure(f'answer has no "outputs" list: {_short_json(document)}')
    outputs = {}
    for entry in entries:
        name = entry_name(entry, "outputs")
        if wanted and name not in wanted:
            continue
        what = f"output {name!r}"
        outputs[name] = decode_entry(entry, what, entry_datatype(entry, what, None))
    return outputs


def parse_data(text: str, limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
    """Inputs written as JSON by a user (`mfn invoke --data`), by input name or in the KServe v2 form.

    Values by name are kept as given (the client casts them once it knows the model); KServe v2
    entries are read with their shape and datatype, as a server would.

    Raises:
        RequestFailure: naming the input and what to write instead.
    """
    raw = text.encode("utf-8", "surrogatepass")
    document = parse_json(raw, limits, limits.max_depth(MAX_RANK), what="the text")
    if not isinstance(document, dict):
        raise RequestFailure(f"the text must be a JSON object, {_DATA_SHAPES}; got a JSON {type(document).__name__}")
    entries = document.get("inputs")
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        return document  # by input name (a model may name an input "inputs": rows are lists, not objects)
    inputs = {}
    for entry in entries:
        name = entry_name(entry, "inputs")
        what = f"input {name!r}"
        if name in inputs:
            raise RequestFailure(f"{what} is given twice: send each input once")
        inputs[name] = decode_entry(entry, what, entry_datatype(entry, what, None), max_element=limits.max_bytes_element,
                                    max_values=len(raw))
    return inputs


def _short_json(document: dict[str, Any]) -> str:
    text = json.dumps(document)
    return text if len(text) <= 80 else text[:77] + "..."
