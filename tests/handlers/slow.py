"""Takes a second per batch, so a test can stop a server while requests are in flight."""

import time

import mfn

PREDICT_S = 1.0


class Slow(mfn.Handler):
    name = "slow"
    inputs = [mfn.Tensor("x", "FP32", [2])]
    outputs = [mfn.Tensor("y", "FP32", [2])]
    batching = mfn.Batching(max_batch_size=2)

    def predict(self, inputs):
        time.sleep(PREDICT_S)
        return {"y": inputs["x"] * 2}
