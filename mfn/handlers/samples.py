"""Sample inputs made from declarations: the one sample maker, for checking a handler before it is packaged,
warming a model up, probing a pod, inferring a model file's outputs and checking a conversion."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mfn.handlers.base import Arrays
from mfn.handlers.declarations import Tensor
from mfn.handlers.dtypes import numpy_dtype

# The length given to a dimension declared -1: small, and more than 1 so a model that mixes it up with
# another dimension shows it.
VARIABLE_DIM_SAMPLE = 2
SAMPLE_WORDS = (b"mfn", b"sample", b"text")


def sample_arrays(tensors: Sequence[Tensor], rows: int, seed: int = 0) -> Arrays:
    """Deterministic arrays of `rows` rows for each declaration: standard normal floats, integers 0-9, random
    booleans, words for BYTES; variable dimensions VARIABLE_DIM_SAMPLE long."""
    rng = np.random.default_rng(seed)
    batch: Arrays = {}
    for tensor in tensors:
        shape = (rows, *(VARIABLE_DIM_SAMPLE if dim == -1 else dim for dim in tensor.shape))
        dtype = numpy_dtype(tensor.dtype)
        if tensor.dtype == "BYTES":
            batch[tensor.name] = rng.choice(np.array(SAMPLE_WORDS, dtype=object), size=shape)
        elif tensor.dtype == "BOOL":
            batch[tensor.name] = rng.random(shape) < 0.5
        elif dtype.kind in "iu":
            batch[tensor.name] = rng.integers(0, 10, size=shape).astype(dtype)
        else:
            batch[tensor.name] = rng.standard_normal(shape).astype(dtype)
    return batch
