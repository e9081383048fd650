"""The streaming benchmark's model: yields `count` chunks of one token per row, with no compute between them,
so what is measured is each server's and each adapter's cost per chunk."""

import numpy as np

import mfn


class Steps(mfn.Handler):
    name = "steps"
    inputs = [mfn.Tensor("count", "INT32", [1])]
    outputs = [mfn.Tensor("token", "INT32", [1])]
    batching = mfn.Batching(max_batch_size=8, max_queue_delay_us=100)

    def predict(self, inputs):
        rows = inputs["count"].shape[0]
        for index in range(int(inputs["count"].max())):
            yield {"token": np.full((rows, 1), index, np.int32)}
