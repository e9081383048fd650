"""A handler whose declaration misspells a dtype: refused while the file is imported, with the line and attribute."""

import numpy as np

import mfn


class Misspelt(mfn.Handler):
    """The dtype is misspelt on purpose."""

    name = "misspelt"
    inputs = [mfn.Tensor("x", "FLOAT32x", [2])]
    outputs = [mfn.Tensor("y", "FP32", [2])]

    def predict(self, inputs: mfn.Arrays) -> mfn.Arrays:
        return {"y": np.asarray(inputs["x"])}
