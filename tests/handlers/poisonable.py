"""Fails any batch holding a row whose first value is the marker, naming that row's id (its second value).

With batching and a queue delay, concurrent requests share batches: the case where one bad request
used to fail all its neighbours.
"""

import mfn

MARKER = -1.0


class Poisonable(mfn.Handler):
    name = "poisonable"
    inputs = [mfn.Tensor("x", "FP32", [4])]
    outputs = [mfn.Tensor("y", "FP32", [4])]
    batching = mfn.Batching(max_batch_size=32, max_queue_delay_us=20_000)

    def predict(self, inputs):
        x = inputs["x"]
        poisoned = x[x[:, 0] == MARKER]
        if len(poisoned):
            raise ValueError(f"row {int(poisoned[0, 1])} is poisoned")
        return {"y": x * 2}
