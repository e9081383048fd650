"""Sample inputs generated from a spec, for checking a handler before it is packaged."""

from __future__ import annotations

import numpy as np

from mfn.handlers.base import Arrays
from mfn.handlers.dtypes import numpy_dtype
from mfn.spec import ModelSpec

VARIABLE_DIM_SAMPLE = 2


def sample_inputs(spec: ModelSpec, rows: int, seed: int = 0) -> Arrays:
    """Deterministic inputs of the declared dtypes and shapes, variable dimensions set to a small size."""
    rng = np.random.default_rng(seed)
    batch: Arrays = {}
    for tensor in spec.inputs:
        shape = (rows, *(VARIABLE_DIM_SAMPLE if dim == -1 else dim for dim in tensor.shape))
        dtype = numpy_dtype(tensor.dtype)
        if tensor.dtype == "BYTES":
            words = np.array([b"mfn", b"sample", b"text"], dtype=object)
            batch[tensor.name] = rng.choice(words, size=shape)
        elif tensor.dtype == "BOOL":
            batch[tensor.name] = rng.random(shape) < 0.5
        elif dtype.kind in "iu":
            batch[tensor.name] = rng.integers(0, 10, size=shape).astype(dtype)
        else:
            batch[tensor.name] = rng.standard_normal(shape).astype(dtype)
    return batch
