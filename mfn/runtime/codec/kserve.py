"""KServe v2 tensor entries, {"name", "datatype", "shape", "data"}, read and written the same way for
requests (server side) and answers (client side).

`data` holds the values in row-major order, flat or nested as the shape says (the protocol allows
both). BYTES values are strings: KServe v2 JSON has no base64 form for them (binary data travels in
Triton's binary-tensor extension, which is not JSON), so none is invented here.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np

from mfn.handlers.dtypes import TRITON_TO_NUMPY
from mfn.runtime.codec.arrays import infer_datatype, json_values, to_array
from mfn.runtime.codec.limits import MAX_RANK
from mfn.runtime.loop import RequestFailure

ENTRY_FIELDS = '"name", "shape", "datatype" and "data"'
# No body within the size limit needs a larger dimension.
MAX_DIM = 2**40
# numpy refuses to make an array, even one without values, whose nonzero dimensions multiply to more bytes than
# sys.maxsize; no datatype (nor an object array's pointer) takes more than 8 bytes an element.
MAX_EXTENT = sys.maxsize // 8


def entry_name(entry: Any, where: str) -> str:
    """The name of one entry of an "inputs" or "outputs" list.

    Raises:
        RequestFailure: (400) when the entry is not an object with a string "name".
    """
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise RequestFailure(f'each entry of "{where}" must be an object with {ENTRY_FIELDS}; got {_short(entry)}')
    return entry["name"]


def entry_datatype(entry: dict, what: str, declared: str | None) -> str:
    """The entry's datatype: as declared (a given "datatype" must agree), else the given one, else inferred from "data".

    Raises:
        RequestFailure: (400) for an unknown datatype or one that differs from the declared.
    """
    given = entry.get("datatype")
    if given is None:
        return declared or infer_datatype(entry.get("data"), what)
    if not isinstance(given, str) or given not in TRITON_TO_NUMPY:
        raise RequestFailure(f"{what} has datatype {_short(given)}, which is not a KServe v2 datatype: use one of "
                             f"{', '.join(TRITON_TO_NUMPY)}" + (f" (this input is {declared})" if declared else ""))
    if declared and given != declared:
        raise RequestFailure(f"{what} has datatype {given}, but the model declares {declared}: send {declared} values")
    return given


def decode_entry(entry: dict, what: str, datatype: str, bools_possible: bool = True,  # noqa: PLR0913
                 max_element: int | None = None, max_values: int = sys.maxsize) -> np.ndarray:
    """An entry's "data" as an array of `datatype` in its "shape".

    Args:
        max_values: The most values the text holding the entry can carry (each takes at least one byte of it).

    Raises:
        RequestFailure: naming `what` when "shape" or "data" is missing or malformed, or they disagree.
    """
    shape = entry_shape(entry, what)
    count = element_count(shape, what)
    if count > max_values:
        raise RequestFailure(f'{what}: "shape" {shape} holds {count:,} values, more than a body of {max_values:,} bytes '
                             "can carry: send the shape of the data")
    data = entry.get("data")
    if not isinstance(data, list):
        raise RequestFailure(f'{what} needs "data", a list of values in row-major order; got {_short(data)}')
    array = to_array(data, what, datatype, bools_possible, max_element)
    if array.ndim <= 1 and array.size == count:
        return array.reshape(shape)
    if array.shape != tuple(shape):
        raise RequestFailure(f'{what}: "data" holds {array.size} values nested as {list(array.shape)}, but "shape" '
                             f"says {shape}: send prod(shape) values, flat or nested by the shape")
    return array


def encode_entry(name: str, array: np.ndarray, datatype: str | None, what: str) -> dict[str, Any]:
    """One tensor as a KServe v2 entry with flat data; without a datatype when it is left to the receiver."""
    if datatype:
        return {"name": name, "datatype": datatype, "shape": list(array.shape), "data": json_values(array, what)}
    return {"name": name, "shape": list(array.shape), "data": json_values(array, what)}


def entry_shape(entry: dict, what: str) -> list[int]:
    """An entry's "shape": up to MAX_RANK non-negative integers, or a RequestFailure naming `what`."""
    shape = entry.get("shape")
    if type(shape) is list and len(shape) <= MAX_RANK:
        for dim in shape:
            if type(dim) is not int or not 0 <= dim < MAX_DIM:
                break
        else:
            return shape
        if type(dim) is int and dim >= MAX_DIM:
            raise RequestFailure(f'{what}: "shape" {_short(shape)} has a dimension of {dim:,}, more than any request can '
                                 f"hold (at most {MAX_DIM - 1:,}): send the shape of the data")
    raise RequestFailure(f'{what} needs "shape", a list of up to {MAX_RANK} non-negative integers such as [1, 4]; '
                         f"got {_short(shape)}")


def element_count(shape: list[int], what: str) -> int:
    """How many values a shape read by entry_shape holds, counted in Python integers: numpy's int64 products wrap
    around (2**32 * 2**32 gives 0) and would let a huge shape pass for a small one.

    Raises:
        RequestFailure: (400) when numpy could not make an array of that shape even without values.
    """
    count = math.prod(shape)
    if not count and math.prod(dim for dim in shape if dim) > MAX_EXTENT:
        raise RequestFailure(f'{what}: "shape" {shape} is too large for an array: send the shape of the data')
    return count


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
