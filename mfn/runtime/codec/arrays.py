"""One tensor's values between JSON (nested lists of numbers, booleans or text) and numpy arrays, strictly.

JSON carries BYTES as text: a string is sent as its UTF-8 bytes, and bytes come back as text. Numbers,
booleans, null or objects are not BYTES values, and text, booleans or null are not numbers; integers
must fit the declared type; rows must all have the same length. Each refusal is a RequestFailure that
names the tensor and says what to send instead. The common, valid case takes numpy's C paths only;
the per-element walks that explain a refusal run only once something is known to be wrong.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mfn.handlers.dtypes import canonical_dtype, numpy_dtype
from mfn.runtime.codec.limits import DEFAULT_LIMITS, MAX_RANK, STATUS_TOO_LARGE
from mfn.runtime.loop import RequestFailure

HANDLER_FAULT = 500
_CONTAINERS = (list, tuple)
_NUMBERS = (int, float)
_NOT_FOUND = object()  # what _first returns when no element is wrong (None is a JSON value: null)


def to_array(value: Any, what: str, datatype: str, bools_possible: bool = True,
             max_element: int | None = DEFAULT_LIMITS.max_bytes_element) -> np.ndarray:
    """Values of one tensor (an array, nested lists or one value) as an array of `datatype`.

    Args:
        value: The tensor's values, e.g. parsed from JSON.
        what: How messages name the tensor, e.g. "input 'x'".
        datatype: The declared KServe v2 datatype (FP32, BYTES, ...).
        bools_possible: False when the JSON text held no `true`/`false`, which skips a scan for
            booleans mixed into numbers (numpy would read them as 1 and 0).
        max_element: Largest BYTES element accepted, in bytes; None when the body is too small to hold a larger one.

    Raises:
        RequestFailure: (400, or 413 for an oversized BYTES element) naming `what` and what to send.
    """
    if datatype == "BYTES":
        return _bytes_array(value, what, max_element)
    return _numeric_array(value, what, datatype, bools_possible)


def infer_array(value: Any, what: str, max_element: int = DEFAULT_LIMITS.max_bytes_element) -> np.ndarray:
    """Values whose datatype is not declared: text gives BYTES, booleans BOOL, numbers INT64 or FP64 (or an array's own dtype)."""
    return to_array(value, what, infer_datatype(value, what), max_element=max_element)


def infer_datatype(value: Any, what: str) -> str:
    """The datatype values of unknown type imply: BYTES for text, otherwise numpy's reading of the numbers."""
    raw = value if isinstance(value, np.ndarray) else _as_array(value, what)
    if raw.dtype.kind == "U" and raw is not value and _first(value, lambda item: not isinstance(item, (str, bytes))) is not _NOT_FOUND:
        raise RequestFailure(f"{what} mixes text with numbers or true/false: send all text or all numbers")
    if raw.dtype.kind in "OSU":
        return "BYTES"
    try:
        return canonical_dtype(raw.dtype)
    except ValueError:
        raise RequestFailure(f"{what} holds {raw.dtype} values: send numbers, booleans or text") from None


def json_values(array: np.ndarray, what: str, nested: bool = False) -> Any:
    """An array's values as JSON-ready Python values: flat in row-major order, or nested by its shape.

    BYTES become text. Non-finite floats stay floats, which Python's json writes as NaN, Infinity and
    -Infinity, as Triton does.

    Raises:
        RequestFailure: (500) when a BYTES element is not UTF-8 text, or not bytes or text at all.
    """
    if array.dtype != object:
        return array.tolist() if nested else array.ravel().tolist()
    flat = array.ravel().tolist()
    try:
        texts = [item.decode("utf-8") for item in flat]
    except (AttributeError, UnicodeDecodeError):
        texts = [_text_of(item, what) for item in flat]
    if not nested:
        return texts
    shaped = np.empty(len(texts), dtype=object)
    shaped[:] = texts
    return shaped.reshape(array.shape).tolist()


def _numeric_array(value: Any, what: str, datatype: str, bools_possible: bool) -> np.ndarray:
    expected = numpy_dtype(datatype)
    is_list = not isinstance(value, np.ndarray)
    raw = _as_array(value, what) if is_list else value
    kind = raw.dtype.kind
    if raw.size == 0 and kind in "biufO":
        return raw.astype(expected)
    if kind in "fO" and expected.kind in "iu" and is_list and _first(value, _not_int) is _NOT_FOUND:
        # All integers, but numpy read them as floats (one past int64 among smaller ones) or kept them as
        # Python ints (past 64 bits): check them as they are.
        raw = np.asarray(value, dtype=object)
        _check_range(raw, what, datatype, expected)
        return raw.astype(expected)
    if kind == "b" or expected.kind == "b":
        if kind != expected.kind:
            raise RequestFailure(_wrong_kind(what, datatype, raw, value))
        return raw
    if kind not in "iuf" or (kind == "f" and expected.kind != "f"):
        raise RequestFailure(_wrong_kind(what, datatype, raw, value))
    if is_list and bools_possible and _holds(value, bool):
        raise RequestFailure(f"{what} expects {datatype} numbers, got true/false among them: send numbers only")
    if expected.kind in "iu" and not np.can_cast(raw.dtype, expected):
        _check_range(raw, what, datatype, expected)
    return raw.astype(expected, copy=False)


def _bytes_array(value: Any, what: str, max_element: int | None) -> np.ndarray:
    if type(value) is list:
        try:  # the common case, a flat list of text, without numpy's walk over nested lists
            return _bytes_elements([item.encode("utf-8") for item in value], (len(value),), what, max_element)
        except (AttributeError, UnicodeEncodeError):
            pass  # nested, or not all text: the general path below sorts it out
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "OSU":
            raise RequestFailure(f"{what} expects BYTES (text), got {value.dtype} numbers: send strings")
        raw = value.astype(object, copy=False)
    else:
        raw = _as_array(value, what, dtype=object)
    flat = raw.ravel().tolist()
    try:
        encoded = [item.encode("utf-8") for item in flat]
    except (AttributeError, UnicodeEncodeError):
        encoded = [_bytes_of(item, what) for item in flat]
    return _bytes_elements(encoded, raw.shape, what, max_element)


def _bytes_elements(encoded: list[bytes], shape: tuple[int, ...], what: str, max_element: int | None) -> np.ndarray:
    if max_element is not None and encoded and max(map(len, encoded)) > max_element:
        raise RequestFailure(
            f"{what} has an element of {max(map(len, encoded)):,} bytes, over the limit of {max_element:,}: "
            "send smaller elements", STATUS_TOO_LARGE,
        )
    return np.array(encoded, dtype=object).reshape(shape)  # bytes are scalars to numpy: always one dimension


def _as_array(value: Any, what: str, dtype: type | None = None) -> np.ndarray:
    """numpy's reading of nested lists; ragged rows are refused here."""
    try:
        return np.asarray(value, dtype=dtype)
    except (ValueError, TypeError, OverflowError) as error:
        if "maximum number of dimension" in str(error):
            raise RequestFailure(f"{what} nests deeper than {MAX_RANK} levels: send at most {MAX_RANK} dimensions") from None
        raise RequestFailure(_ragged(what)) from None


def _check_range(raw: np.ndarray, what: str, datatype: str, expected: np.dtype) -> None:
    info = np.iinfo(expected)
    low, high = raw.min(), raw.max()
    if low < info.min or high > info.max:
        given = low if low < info.min else high
        raise RequestFailure(f"{what} expects {datatype} integers from {info.min} to {info.max}, got {given}: "
                             "send values in that range or declare a wider type")


def _wrong_kind(what: str, datatype: str, raw: np.ndarray, value: Any) -> str:
    if isinstance(value, np.ndarray):  # e.g. a binary tensor: describe its elements as JSON ones would be
        value = value.tolist()
    wanted = "true/false" if datatype == "BOOL" else f"{datatype} " + ("numbers" if numpy_dtype(datatype).kind == "f" else "integers")
    if raw.dtype.kind == "O":
        given = _describe(_first(value, lambda item: not isinstance(item, _NUMBERS) or isinstance(item, bool)))
    else:
        given = {"b": "true/false", "f": "numbers with a fraction, NaN or Infinity", "U": "text", "S": "bytes",
                 "i": "integers", "u": "integers"}.get(raw.dtype.kind, str(raw.dtype))
    return f"{what} expects {wanted}, got {given}: send {wanted}"


def _ragged(what: str) -> str:
    return f"{what} has rows of different lengths (ragged): every row needs the same shape"


def _text_of(item: Any, what: str) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, (bytes, bytearray, np.bytes_)):
        try:
            return bytes(item).decode("utf-8")
        except UnicodeDecodeError:
            raise RequestFailure(
                f"{what} holds bytes that are not UTF-8 text, which JSON cannot carry: "
                "send text, or base64-encode binary data into a string", HANDLER_FAULT,
            ) from None
    raise RequestFailure(f"{what} holds {_describe(item)} where BYTES needs bytes or text", HANDLER_FAULT)


def _bytes_of(item: Any, what: str) -> bytes:
    if isinstance(item, (bytes, bytearray, np.bytes_)):
        return bytes(item)
    if isinstance(item, _CONTAINERS):
        # With dtype=object numpy keeps ragged rows (or levels past its 32 dimensions) as list elements.
        raise RequestFailure(f"{what} has rows of different lengths (ragged) or nests deeper than {MAX_RANK} levels: "
                             "every row needs the same shape")
    if isinstance(item, str):
        try:
            return item.encode("utf-8")
        except UnicodeEncodeError:
            raise RequestFailure(f"{what} holds text that is not valid Unicode (a lone surrogate escape): send UTF-8 text") from None
    raise RequestFailure(f"{what} expects BYTES (text), got {_describe(item)}: send strings, e.g. [[\"some text\"]]")


def _not_int(item: Any) -> bool:
    return type(item) is not int  # bool is an int subclass, and not an integer in JSON


def _holds(value: Any, kind: type) -> bool:
    """Whether nested lists hold an element of `kind` (bool here means JSON true/false)."""
    return _first(value, lambda item: isinstance(item, kind)) is not _NOT_FOUND


def _first(value: Any, wrong: Any) -> Any:
    """The first non-list element of nested lists for which `wrong` is true, depth first; _NOT_FOUND if none is."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, _CONTAINERS):
            stack.extend(reversed(item))
        elif wrong(item):
            return item
    return _NOT_FOUND


def _describe(item: Any) -> str:
    if item is None:
        return "null"
    if isinstance(item, bool):
        return "true/false"
    if isinstance(item, dict):
        return "an object"
    if isinstance(item, _CONTAINERS):
        return "nested lists"
    if isinstance(item, (str, bytes)):
        return "text"
    if isinstance(item, _NUMBERS):
        return f"a number ({item!r})"
    return type(item).__name__

