"""Request and answer bodies on the server side, for servers that hand mfn raw JSON (TorchServe).

Two request shapes are accepted and answered in kind:
- KServe v2: {"inputs": [{"name", "shape", "datatype", "data"}]} → {"model_name", "model_version", "outputs": [...]}
- plain: {"<input name>": nested list} → {"<output name>": nested list}

A single row may be sent without its batch dimension. "datatype" may be left out of a KServe v2
entry (it is then the declared one); given, it must be the declared one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mfn.handlers.base import Arrays
from mfn.runtime.codec.arrays import json_values, to_array
from mfn.runtime.codec.kserve import decode_entry, encode_entry, entry_datatype, entry_name
from mfn.runtime.codec.limits import DEFAULT_LIMITS, Limits, parse_json, to_json
from mfn.runtime.loop import RequestFailure
from mfn.spec import ModelSpec

KSERVE_V2 = "v2"
PLAIN = "plain"
_BODY_SHAPES = 'a JSON object: {"inputs": [{"name", "shape", "datatype", "data"}, ...]} or {"<input name>": [[...]], ...}'


@dataclass(frozen=True)
class DecodedRequest:
    """One request's arrays and the body shape its answer must use."""

    arrays: Arrays
    style: str


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

    def decode(self, body: Any) -> DecodedRequest:
        """Decode a JSON body (bytes, text, or already parsed) into arrays of the declared dtypes.

        Raises:
            RequestFailure: 400 naming the input and what to send instead (413 past a size limit).
        """
        if isinstance(body, dict):
            document, bools_possible, max_element = body, True, self.limits.max_bytes_element
        else:
            raw = self._raw(body)
            document = parse_json(raw, self.limits, self.max_depth)
            # Booleans can hide among numbers (numpy reads them as 1 and 0) only if the text spells them.
            bools_possible = self._numeric and (b"true" in raw or b"false" in raw)
            # A BYTES element is never longer than the body that carries it.
            max_element = self.limits.max_bytes_element if len(raw) > self.limits.max_bytes_element else None
            if not isinstance(document, dict):
                raise RequestFailure(f"request body must be {_BODY_SHAPES}; got a JSON {type(document).__name__}")
        if "inputs" in document and "inputs" not in self.datatypes:
            return DecodedRequest(self._decode_v2(document["inputs"], bools_possible, max_element), KSERVE_V2)
        return DecodedRequest(self._decode_plain(document, bools_possible, max_element), PLAIN)

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

    def _decode_v2(self, entries: Any, bools_possible: bool, max_element: int | None) -> Arrays:
        if not isinstance(entries, list):
            raise RequestFailure(f'"inputs" must be a list of objects with "name", "shape", "datatype" and "data"; '
                                 f"got a JSON {type(entries).__name__}")
        arrays = {}
        for entry in entries:
            name = entry_name(entry, "inputs")
            what, declared, rank = self._input(name, arrays)
            datatype = entry_datatype(entry, what, declared)
            array = decode_entry(entry, what, datatype, bools_possible, max_element)
            arrays[name] = array[None] if array.ndim == rank - 1 else array  # a row sent without its batch dimension
        return arrays

    def _decode_plain(self, document: dict, bools_possible: bool, max_element: int | None) -> Arrays:
        arrays = {}
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
