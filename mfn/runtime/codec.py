"""JSON request and response bodies for servers that hand mfn raw JSON (TorchServe REST and gRPC).

Two request shapes are accepted and answered in kind:
- KServe v2: {"inputs": [{"name", "shape", "datatype", "data"}]} → {"model_name", "model_version", "outputs": [...]}
- plain: {"<input name>": nested list} → {"<output name>": nested list}
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from mfn.handlers.base import Arrays
from mfn.handlers.declarations import Tensor
from mfn.handlers.dtypes import canonical_dtype, numpy_dtype
from mfn.runtime.loop import RequestFailure
from mfn.spec import ModelSpec

KSERVE_V2 = "v2"
PLAIN = "plain"


@dataclass(frozen=True)
class DecodedRequest:
    """One request's arrays and the body shape its answer must use."""

    arrays: Arrays
    style: str


class RequestDecoder:
    """Decodes JSON bodies for one model; built once per model so nothing per request is rebuilt."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.declared = {tensor.name: tensor for tensor in spec.inputs}

    def decode(self, body: Any) -> DecodedRequest:
        """Parse a JSON body (bytes, text or an already-parsed dict) into arrays of the declared dtypes.

        Raises:
            RequestFailure: (status 400) naming the input and what is wrong with it.
        """
        if body is None:
            raise RequestFailure("empty request body: send a JSON object with Content-Type: application/json")
        if isinstance(body, (bytes, bytearray, str)):
            try:
                body = json.loads(body)
            except ValueError as error:
                raise RequestFailure(f"request body is not JSON: {error}") from None
        if not isinstance(body, dict):
            raise RequestFailure('request body must be a JSON object: {"inputs": [...]} or {"<input name>": [...]}')
        declared = self.declared
        if isinstance(body.get("inputs"), list) and "inputs" not in declared:
            return DecodedRequest({item_name(item): _v2_input(item, declared) for item in body["inputs"]}, KSERVE_V2)
        unknown = sorted(set(body) - set(declared))
        if unknown:
            raise RequestFailure(f"unknown input(s) {unknown}; {self.spec.name} takes {sorted(declared)}")
        return DecodedRequest({name: _plain_input(value, declared[name]) for name, value in body.items()}, PLAIN)


def decode_request(body: Any, spec: ModelSpec) -> DecodedRequest:
    """Decode one body for `spec` (see RequestDecoder, which adapters keep per model)."""
    return RequestDecoder(spec).decode(body)


def encode_response(outputs: Arrays, style: str, spec: ModelSpec) -> dict[str, Any]:
    """Render outputs in the body shape of the request they answer."""
    if style == PLAIN:
        return {name: _nested_json_values(array) for name, array in outputs.items()}
    return {
        "model_name": spec.name,
        "model_version": str(spec.version),
        "outputs": [
            {
                "name": tensor.name,
                "datatype": tensor.dtype,
                "shape": list(outputs[tensor.name].shape),
                "data": _flat_json_values(outputs[tensor.name]),
            }
            for tensor in spec.outputs
            if tensor.name in outputs
        ],
    }


def item_name(item: Any) -> str:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise RequestFailure('each entry of "inputs" needs a "name", "shape", "datatype" and "data"')
    return item["name"]


def _v2_input(item: dict, declared: dict[str, Tensor]) -> np.ndarray:
    name = item["name"]
    if name not in declared:
        raise RequestFailure(f"unknown input {name!r}; the model takes {sorted(declared)}")
    tensor = declared[name]
    datatype = item.get("datatype")
    if datatype is not None and datatype != tensor.dtype:
        try:
            given = canonical_dtype(datatype)
        except ValueError as error:
            raise RequestFailure(f"input {name!r}: {error}") from None
        if given != tensor.dtype:
            raise RequestFailure(f"input {name!r} has datatype {given}, but the model expects {tensor.dtype}")
    array = _cast(item.get("data"), tensor)
    if "shape" in item:
        try:
            array = array.reshape(item["shape"])
        except (ValueError, TypeError):
            raise RequestFailure(f"input {name!r}: {array.size} values do not fit shape {item['shape']}") from None
    if array.ndim == len(tensor.shape):
        array = array[np.newaxis]  # one row given without its batch dimension
    return array


def _plain_input(value: Any, tensor: Tensor) -> np.ndarray:
    array = _cast(value, tensor)
    if array.ndim == len(tensor.shape):
        array = array[np.newaxis]  # one row given without its batch dimension
    return array


def _cast(value: Any, tensor: Tensor) -> np.ndarray:
    if tensor.dtype == "BYTES":
        raw = np.asarray(value, dtype=object)
        encoded = [item.encode("utf-8") if isinstance(item, str) else bytes(item) for item in raw.ravel().tolist()]
        array = np.empty(len(encoded), dtype=object)
        array[:] = encoded
        return array.reshape(raw.shape)
    try:
        raw = np.asarray(value)
    except ValueError:
        raise RequestFailure(f"input {tensor.name!r} is ragged: every row needs the same shape") from None
    expected = numpy_dtype(tensor.dtype)
    if raw.dtype.kind not in "biuf" or (raw.dtype.kind == "f" and expected.kind in "biu") or (
        expected.kind == "b" and raw.dtype.kind != "b"
    ):
        raise RequestFailure(f"input {tensor.name!r} expects {tensor.dtype} values, got {_json_kind(raw)}")
    return raw.astype(expected)


def _json_kind(array: np.ndarray) -> str:
    return {"f": "numbers with fractions", "U": "strings", "O": "mixed values", "b": "booleans"}.get(array.dtype.kind, str(array.dtype))


def _flat_json_values(array: np.ndarray) -> list:
    values = array.ravel().tolist()
    if array.dtype == object:
        return [item.decode("utf-8", "replace") if isinstance(item, bytes) else item for item in values]
    return values


def _nested_json_values(array: np.ndarray) -> list:
    if array.dtype != object:
        return array.tolist()
    decoded = np.empty(array.size, dtype=object)
    decoded[:] = _flat_json_values(array)
    return decoded.reshape(array.shape).tolist()
