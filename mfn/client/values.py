"""Python values to arrays of a model's declared datatypes, refused before anything is sent when they cannot be."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from mfn.errors import InvokeError
from mfn.runtime.codec.client import to_arrays
from mfn.runtime.loop import RequestFailure


def arrays_for(model: str, inputs: Mapping[str, Any], declared: dict[str, tuple[str, int]] | None) -> dict[str, np.ndarray]:
    """Inputs cast to their declared (datatype, rank); a single row given without its batch dimension gets one.

    Raises:
        InvokeError: naming the input and what to send instead.
    """
    try:
        return to_arrays(inputs, declared, model)
    except RequestFailure as failure:
        raise InvokeError(f"{model}: {failure.message}") from None


def coerce_inputs(inputs: Mapping[str, Any], metadata: dict) -> dict[str, np.ndarray]:
    """Cast inputs to the datatypes in a model's KServe v2 metadata, adding the batch dimension to a single row.

    Raises:
        InvokeError: naming the input and what to send instead.
    """
    declared = {tensor["name"]: (tensor["datatype"], len(tensor["shape"])) for tensor in metadata["inputs"]}
    return arrays_for(metadata["name"], inputs, declared)
