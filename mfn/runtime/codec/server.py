"""Request and answer bodies on the server side, for servers that hand mfn raw bodies (TorchServe).

Three request shapes are accepted and answered in kind:
- KServe v2: {"inputs": [{"name", "shape", "datatype", "data"}]} → {"model_name", "model_version", "outputs": [...]}
- KServe v2 with binary tensor data (see binary.py): the same header, the tensors' raw bytes after it; outputs
  are answered as binary data where the request asks for it.
- plain: {"<input name>": nested list} → {"<output name>": nested list}

A single row may be sent without its batch dimension. "datatype" may be left out of a KServe v2
entry (it is then the declared one); given, it must be the declared one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mfn.handlers.base import Arrays
from mfn.runtime.codec import binary
from mfn.runtime.codec.arrays import json_values, to_array
from mfn.runtime.codec.kserve import decode_entry, encode_entry, entry_datatype, entry_name, entry_shape
from mfn.runtime.codec.limits import DEFAULT_LIMITS, Limits, parse_json, to_json
from mfn.runtime.loop import RequestFailure
from mfn.spec import ModelSpec

KSERVE_V2 = "v2"
PLAIN = "plain"
_BODY_SHAPES = 'a JSON object: {"inputs": [{"name", "shape", "datatype", "data"}, ...]} or {"<input name>": [[...]], ...}'


@dataclass(frozen=True)
class DecodedRequest:
    """One request's arrays, the body shape its answer must use, and the outputs it wants as binary data."""

    arrays: Arrays
    style: str
    binary_outputs: frozenset[str] = frozenset()


class ServerCodec:
    """Decodes request bodies and encodes answers for one model; built once, so nothing per request is rebuilt.

    Args:
        spec: The model's spec: declared inputs and outputs.
        limits: Size and nesting limits for request bodies.
    """

    def __init__(self, spec: ModelSpec, limits: Limits = DEFAULT_LIMITS) -> None:
        self.spec = spec
        self.limits = limits
        self.datatypes = {tensor.name: tensor.dtype for tensor in spec.inputs}
        # Per input: how messages name it, its datatype and its rank with the batch dimension.
        self._inputs = {tensor.name: (f"input {tensor.name!r}", tensor.dtype, len(tensor.shape) + 1) for tensor in spec.inputs}
        self.max_depth = limits.max_depth(max((rank for _, _, rank in self._inputs.values()), default=1))
        self._numeric = any(dtype != "BYTES" for dtype in self.datatypes.values())
        self._outputs = [(tensor.name, tensor.dtype, f"output {tensor.name!r}") for tensor in spec.outputs]
        self._answer_head = {"model_name": spec.name, "model_version": str(spec.version)}

    def decode(self, body: Any, header_length: Any = None) -> DecodedRequest:
        """Decode a body (bytes, text, or already parsed JSON) into arrays of the declared dtypes.

        Args:
            body: The request body.
            header_length: The `Inference-Header-Content-Length` the request came with, if any: the body
                is then a JSON header followed by binary tensor data.

        Raises:
            RequestFailure: 400 naming the input and what to send instead (413 past a size limit).
        """
        if header_length is not None:
            return self._decode_binary(self._raw(body), header_length)
        if isinstance(body, dict):
            max_element: int | None
            document, bools_possible, max_element = body, True, self.limits.max_bytes_element
            max_values = self.limits.max_body_bytes
        else:
            raw = self._raw(body)
            document = parse_json(raw, self.limits, self.max_depth)
            # Booleans can hide among numbers (numpy reads them as 1 and 0) only if the text spells them.
            bools_possible = self._numeric and (b"true" in raw or b"false" in raw)
            # A BYTES element is never longer than the body that carries it.
            max_element = self.limits.max_bytes_element if len(raw) > self.limits.max_bytes_element else None
            max_values = len(raw)  # each value takes at least a byte of the text
            if not isinstance(document, dict):
                raise RequestFailure(f"request body must be {_BODY_SHAPES}; got a JSON {type(document).__name__}")
        if "inputs" in document and "inputs" not in self.datatypes:
            arrays = self._decode_v2(document["inputs"], bools_possible, max_element, max_values)
            return DecodedRequest(arrays, KSERVE_V2, self._binary_outputs(document))
        return DecodedRequest(self._decode_plain(document, bools_possible, max_element), PLAIN)

    def encode_answer(self, outputs: Arrays, request: DecodedRequest) -> tuple[bytes, int | None]:
        """The answer to one request and, when it holds binary data, its JSON header's length.

        Raises:
            RequestFailure: (500) when an output cannot be written as JSON (BYTES that are not UTF-8 text).
        """
        if not request.binary_outputs:
            return self.encode(outputs, request.style), None
        entries, buffers = [], []
        for name, datatype, what in self._outputs:
            if name not in outputs:
                continue  # a postprocess hook may leave an output out
            if name not in request.binary_outputs:
                entries.append(encode_entry(name, outputs[name], datatype, what))
                continue
            array = np.asarray(outputs[name])
            buffer = binary.tensor_bytes(array, datatype)
            entries.append({"name": name, "datatype": datatype, "shape": list(array.shape),
                            "parameters": {binary.BINARY_DATA_SIZE: len(buffer)}})
            buffers.append(buffer)
        return binary.encode_body({**self._answer_head, "outputs": entries}, buffers)

    def encode(self, outputs: Arrays, style: str) -> bytes:
        """The answer to one request, as UTF-8 JSON in the body shape of that request.

        Raises:
            RequestFailure: (500) when an output cannot be written as JSON (BYTES that are not UTF-8 text).
        """
        return to_json(self.answer(outputs, style))

    @staticmethod
    def error(failure: RequestFailure) -> bytes:
        """The body of a failed request's answer: {"error": "<what failed and what to do>"}."""
        return to_json({"error": failure.message})

    def answer(self, outputs: Arrays, style: str) -> dict[str, Any]:
        """The answer document before serialisation (see encode)."""
        if style == PLAIN:
            return {name: json_values(array, f"output {name!r}", nested=True) for name, array in outputs.items()}
        entries = [
            encode_entry(name, outputs[name], datatype, what)
            for name, datatype, what in self._outputs
            if name in outputs  # a postprocess hook may leave an output out
        ]
        return {**self._answer_head, "outputs": entries}

    def _decode_v2(self, entries: Any, bools_possible: bool, max_element: int | None, max_values: int) -> Arrays:
        if not isinstance(entries, list):
            raise RequestFailure(f'"inputs" must be a list of objects with "name", "shape", "datatype" and "data"; '
                                 f"got a JSON {type(entries).__name__}")
        arrays: Arrays = {}
        for entry in entries:
            name = entry_name(entry, "inputs")
            what, declared, rank = self._input(name, arrays)
            if "data" not in entry and binary.binary_size(entry, what) is not None:
                raise RequestFailure(f'{what} has "{binary.BINARY_DATA_SIZE}", but the request has no '
                                     f"{binary.HEADER_LENGTH} header: send that header with the JSON header's length")
            datatype = entry_datatype(entry, what, declared)
            array = decode_entry(entry, what, datatype, bools_possible, max_element, max_values)
            arrays[name] = array[None] if array.ndim == rank - 1 else array  # a row sent without its batch dimension
        return arrays

    def _decode_binary(self, raw: bytes | bytearray, header_length: Any) -> DecodedRequest:
        length = binary.header_length(header_length, len(raw))
        view = memoryview(raw)
        document = parse_json(view[:length].tobytes(), self.limits, self.max_depth, what="JSON header")
        entries = document.get("inputs") if isinstance(document, dict) else None
        if not isinstance(entries, list):
            raise RequestFailure('the JSON header of a binary request must be {"inputs": [{"name", "shape", '
                                 '"datatype", "parameters": {"binary_data_size": <bytes>}}, ...]}')
        arrays: Arrays = {}
        offset = length
        for entry in entries:
            name = entry_name(entry, "inputs")
            what, declared, rank = self._input(name, arrays)
            size = binary.binary_size(entry, what)
            if size is None:
                datatype = entry_datatype(entry, what, declared)
                array = decode_entry(entry, what, datatype, max_element=self.limits.max_bytes_element, max_values=length)
            else:
                if offset + size > len(raw):
                    raise RequestFailure(f'{what}: "{binary.BINARY_DATA_SIZE}" {size:,} runs past the end of the body '
                                         f"({len(raw) - offset:,} bytes left)")
                given = binary.check_datatype(entry.get("datatype"), what)
                array = binary.read_tensor(view[offset:offset + size], given, entry_shape(entry, what), what,
                                           self.limits.max_bytes_element)
                offset += size
                if given != declared:  # converted by the rules JSON numbers follow: no silent truncation
                    array = to_array(array, what, declared, bools_possible=False)
            arrays[name] = array[None] if array.ndim == rank - 1 else array
        if offset != len(raw):
            raise RequestFailure(f"{len(raw) - offset:,} bytes follow the last input's binary data: each input's "
                                 f'"{binary.BINARY_DATA_SIZE}" must cover its bytes exactly')
        return DecodedRequest(arrays, KSERVE_V2, self._binary_outputs(document))

    def _binary_outputs(self, document: dict) -> frozenset[str]:
        if "parameters" not in document and "outputs" not in document:
            return frozenset()
        return binary.wants_binary(document, [name for name, _, _ in self._outputs])

    def _decode_plain(self, document: dict, bools_possible: bool, max_element: int | None) -> Arrays:
        arrays: Arrays = {}
        for name, value in document.items():
            what, datatype, rank = self._input(name, arrays)
            array = to_array(value, what, datatype, bools_possible, max_element)
            arrays[name] = array[None] if array.ndim == rank - 1 else array  # a row sent without its batch dimension
        return arrays

    def _input(self, name: str, seen: Arrays) -> tuple[str, str, int]:
        declared = self._inputs.get(name)
        if declared is None:
            raise RequestFailure(f"unknown input {name!r}: {self.spec.name} takes {sorted(self.datatypes)}")
        if name in seen:
            raise RequestFailure(f"input {name!r} is given twice: send each input once")
        return declared

    @staticmethod
    def _raw(body: Any) -> bytes | bytearray:
        if isinstance(body, str):
            body = body.encode("utf-8", "surrogatepass")
        if not isinstance(body, (bytes, bytearray)):
            raise RequestFailure(f"request body must be {_BODY_SHAPES}; got {type(body).__name__}")
        if not body:
            raise RequestFailure(f"empty request body: send {_BODY_SHAPES} with Content-Type: application/json")
        return body


def decode_request(body: Any, spec: ModelSpec, limits: Limits = DEFAULT_LIMITS) -> DecodedRequest:
    """Decode one body for `spec` (see ServerCodec, which adapters keep per model)."""
    return ServerCodec(spec, limits).decode(body)


def encode_response(outputs: Arrays, style: str, spec: ModelSpec) -> bytes:
    """Encode one answer for `spec` (see ServerCodec, which adapters keep per model)."""
    return ServerCodec(spec).encode(outputs, style)
