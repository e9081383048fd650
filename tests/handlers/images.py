"""Image-sized tensors (FP32[3, 224, 224] per row), cheap to compute, for the transport tests.

`calls` reports how many predict calls this instance had made, this one included, so a test can see
that warm-up ran before the first request.
"""

import numpy as np

import mfn


class Images(mfn.Handler):
    name = "images"
    inputs = [mfn.Tensor("image", "FP32", [3, 224, 224])]
    outputs = [mfn.Tensor("logits", "FP32", [1000]), mfn.Tensor("calls", "INT64", [1])]
    batching = mfn.Batching(max_batch_size=8)
    warmup = mfn.Warmup(batch_size=2, count=3)

    def setup(self, ctx):
        self.calls = 0

    def predict(self, inputs):
        self.calls += 1
        flat = inputs["image"].reshape(len(inputs["image"]), -1)
        logits = flat[:, :1000] * 2.0 + flat.mean(axis=1, keepdims=True)
        return {"logits": logits.astype(np.float32), "calls": np.full((len(flat), 1), self.calls, dtype=np.int64)}
