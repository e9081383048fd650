"""Fails any batch that contains a negative value, to show one batch's failure stays in that batch."""

import mfn

POISON = -1.0


class Faulty(mfn.Handler):
    name = "faulty"
    inputs = [mfn.Tensor("x", "FP32", [2])]
    outputs = [mfn.Tensor("y", "FP32", [2])]
    batching = mfn.Batching(max_batch_size=4)

    def setup(self, ctx):
        ctx.logger.info("faulty v%s set up on %s", ctx.version, ctx.device)
        self.poisoned = ctx.metrics.counter("faulty_poisoned_batches_total", "Batches refused for a poisoned row.")

    def predict(self, inputs):
        if (inputs["x"] == POISON).any():
            self.poisoned.inc()
            raise ValueError("poisoned row in batch")
        return {"y": inputs["x"] * 2}
