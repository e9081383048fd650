"""Three inputs of three kinds (text, floats, small integers), for the codec's malformed-body tests."""

import numpy as np

import mfn


class Mixed(mfn.Handler):
    name = "mixed"
    inputs = [mfn.Tensor("text", "BYTES", [1]), mfn.Tensor("x", "FP32", [2]), mfn.Tensor("level", "UINT8", [1])]
    outputs = [mfn.Tensor("echo", "BYTES", [1]), mfn.Tensor("total", "FP32", [1])]
    batching = mfn.Batching(max_batch_size=8)

    def predict(self, inputs):
        total = inputs["x"].sum(axis=1, keepdims=True) * inputs["level"].astype(np.float32)
        return {"echo": inputs["text"], "total": total.astype(np.float32)}
