"""Imports a sibling module relatively and reads a data file inside the package."""

from pathlib import Path

import mfn

from .util import triple

OFFSET = float((Path(__file__).parent / "data" / "offset.txt").read_text())


class Tripler(mfn.Handler):
    name = "tripler"
    inputs = [mfn.Tensor("x", "FP32", [1])]
    outputs = [mfn.Tensor("y", "FP32", [1])]
    batching = mfn.Batching(max_batch_size=4)

    def predict(self, inputs):
        return {"y": triple(inputs["x"]) + OFFSET}
