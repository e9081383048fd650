"""Answers with its own version number, so tests can tell which version served a request."""

import numpy as np

import mfn


class Versioned(mfn.Handler):
    name = "versioned"
    inputs = [mfn.Tensor("x", "INT32", [1])]
    outputs = [mfn.Tensor("served_by", "INT32", [1])]
    batching = mfn.Batching(max_batch_size=4)
    version_policy = mfn.VersionPolicy(kind="all")

    def setup(self, ctx):
        self.version = ctx.version

    def predict(self, inputs):
        return {"served_by": np.full_like(inputs["x"], self.version)}
