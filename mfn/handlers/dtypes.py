"""Tensor data types: Triton's names are canonical; numpy dtypes are accepted as aliases."""

from __future__ import annotations

import numpy as np

TRITON_TO_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    # Strings and raw bytes travel as numpy object arrays holding `bytes`.
    "BYTES": np.dtype(np.object_),
}

_NUMPY_TO_TRITON = {dtype: name for name, dtype in TRITON_TO_NUMPY.items()}

SUPPORTED_DTYPES = ", ".join(TRITON_TO_NUMPY)


def canonical_dtype(value: object) -> str:
    """Return Triton's name for a dtype given as a Triton name, a numpy dtype or a numpy type name.

    Raises:
        ValueError: naming the unknown value and the accepted spellings.
    """
    if isinstance(value, str):
        upper = value.upper().removeprefix("TYPE_")
        if upper == "STRING":
            return "BYTES"
        if upper in TRITON_TO_NUMPY:
            return upper
    if value in (str, bytes, np.str_, np.bytes_):
        return "BYTES"
    try:
        dtype = np.dtype(value)  # type: ignore[call-overload]
    except TypeError:
        dtype = None
    if dtype is not None:
        if dtype.kind in "SUO":
            return "BYTES"
        if dtype in _NUMPY_TO_TRITON:
            return _NUMPY_TO_TRITON[dtype]
    raise ValueError(f"unknown dtype {value!r}: use one of {SUPPORTED_DTYPES} or the matching numpy dtype")


def numpy_dtype(triton_name: str) -> np.dtype:
    """Return the numpy dtype that carries values of a Triton data type."""
    return TRITON_TO_NUMPY[triton_name]
