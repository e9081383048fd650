"""Variable-length input: requests of different lengths must not be concatenated into one batch."""

import numpy as np

import mfn


class Sequences(mfn.Handler):
    name = "sequences"
    inputs = [mfn.Tensor("tokens", "INT64", [-1])]
    outputs = [mfn.Tensor("total", "INT64", [1]), mfn.Tensor("length", "INT64", [1])]
    batching = mfn.Batching(max_batch_size=8, max_queue_delay_us=5000)

    def preprocess(self, request):
        return {"tokens": request["tokens"] + 0}

    def predict(self, inputs):
        tokens = inputs["tokens"]
        rows = tokens.shape[0]
        return {
            "total": tokens.sum(axis=1, keepdims=True),
            "length": np.full((rows, 1), tokens.shape[1], dtype=np.int64),
        }
