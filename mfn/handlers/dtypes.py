"""Tensor data types: Triton's names are canonical; numpy dtypes are accepted as aliases."""

from __future__ import annotations

import difflib

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

# Names numpy reads as a 64-bit type although most models mean 32 bits: refused with the two choices.
_AMBIGUOUS = {"float": "'FP32' (what most models use) or 'FP64'", "int": "'INT64' or 'INT32'",
              "uint": "'UINT64' or 'UINT32'", "long": "'INT64' or 'INT32'"}
# Spellings a misspelt dtype is compared with, each with the Triton name it suggests.
_SPELLINGS = {**{name.lower(): name for name in TRITON_TO_NUMPY},
              **{str(dtype): name for name, dtype in TRITON_TO_NUMPY.items() if name != "BYTES"}, "string": "BYTES"}


def canonical_dtype(value: object) -> str:  # noqa: C901
    """Return Triton's name for a dtype given as a Triton name, a numpy dtype or a numpy type name.

    Raises:
        ValueError: naming the unknown or ambiguous value and what to write instead.
    """
    # Identity, not equality: numpy's float64 dtype compares equal to Python's float.
    if value is float or value is int:
        raise ValueError(f"dtype {value.__name__} (Python's {value.__name__}) is ambiguous: write {_AMBIGUOUS[value.__name__]}")
    if isinstance(value, str) and value.lower() in _AMBIGUOUS:
        raise ValueError(f"dtype {value!r} is ambiguous: write {_AMBIGUOUS[value.lower()]}")
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
    close = difflib.get_close_matches(str(value).lower(), _SPELLINGS, n=1, cutoff=0.6)
    suggestion = f"did you mean {_SPELLINGS[close[0]]!r}? " if close else ""
    raise ValueError(f"unknown dtype {value!r}: {suggestion}use one of {SUPPORTED_DTYPES} or the matching numpy dtype")


def numpy_dtype(triton_name: str) -> np.dtype:
    """Return the numpy dtype that carries values of a Triton data type."""
    return TRITON_TO_NUMPY[triton_name]
