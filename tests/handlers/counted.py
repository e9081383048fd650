"""Counts its own predict calls and answers with the count, so cache tests can tell a computed answer from a
reused one: `y` is `x` doubled, `calls` the number of predict calls this worker had made when it answered.
A row's `x` above 0 also sleeps that many milliseconds (a slow model for the cache benchmark)."""

import time

import numpy as np

import mfn


class Counted(mfn.Handler):
    name = "counted"
    inputs = [mfn.Tensor("x", "FP32", [-1])]
    outputs = [mfn.Tensor("y", "FP32", [-1]), mfn.Tensor("calls", "INT64", [1])]
    batching = mfn.Batching(max_batch_size=8)
    cache = mfn.Cache(kind="local", size_mb=8)

    def setup(self, ctx):
        self.calls = 0

    def predict(self, inputs):
        self.calls += 1
        x = inputs["x"]
        delay_ms = float(x[:, :1].max()) if x.size else 0.0
        if delay_ms > 0:
            time.sleep(delay_ms / 1000)
        return {"y": x * 2, "calls": np.full((len(x), 1), self.calls, dtype=np.int64)}


class CountedFixed(mfn.Handler):
    """Counted with fixed per-row dims and one output, the models Triton's own response cache serves exactly (it
    keys answers without their shape or requested outputs): `y` is `x` doubled, then the call count."""

    name = "counted_fixed"
    inputs = [mfn.Tensor("x", "FP32", [2])]
    outputs = [mfn.Tensor("y", "FP32", [3])]
    batching = mfn.Batching(max_batch_size=8)
    cache = mfn.Cache(kind="local", size_mb=8)

    def setup(self, ctx):
        self.counted = Counted()
        self.counted.setup(ctx)

    def predict(self, inputs):
        answer = self.counted.predict(inputs)
        return {"y": np.concatenate([answer["y"], answer["calls"].astype(np.float32)], axis=1)}
