"""A handler that lives in a directory of its own: it imports modules beside it and reads a label file beside it."""

from pathlib import Path

import numpy as np

import mfn
from helpers import double
from model import LABELS_FILE  # named like the module Triton's stub loads mfn's adapter as

LABELS = (Path(__file__).parent / LABELS_FILE).read_text().split()


class Labeler(mfn.Handler):
    name = "labeler"
    inputs = [mfn.Tensor("x", "FP32", [1])]
    outputs = [mfn.Tensor("y", "FP32", [1]), mfn.Tensor("label", "BYTES", [1])]
    batching = mfn.Batching(max_batch_size=4)

    def setup(self, ctx):
        self.offset = 100.0 * ctx.version

    def predict(self, inputs):
        x = inputs["x"]
        labels = [[LABELS[int(value) % len(LABELS)].encode()] for value in x[:, 0]]
        return {"y": double(x) + self.offset, "label": np.array(labels, dtype=object)}
