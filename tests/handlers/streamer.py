"""A streaming model function for tests: each row counts to its own `steps`, one chunk per step, `delay_ms` apart.

Every chunk carries the batch's row count, so tests see requests streamed together; with $MFN_TEST_STREAM_LOG
set, each step and the generator's close are appended to that file, so tests see how far a cancelled batch got.
"""

import os
import time

import numpy as np

import mfn


class Streamer(mfn.Handler):
    name = "streamer"
    inputs = [mfn.Tensor("steps", "INT32", [1]), mfn.Tensor("delay_ms", "INT32", [1])]
    outputs = [mfn.Tensor("step", "INT32", [1]), mfn.Tensor("batch", "INT32", [1])]
    batching = mfn.Batching(max_batch_size=8, max_queue_delay_us=50_000)

    def setup(self, ctx):
        self.log = os.environ.get("MFN_TEST_STREAM_LOG")

    def predict(self, inputs):
        steps = inputs["steps"][:, 0]
        delay_s = float(inputs["delay_ms"].max()) / 1000
        rows = len(steps)
        try:
            for step in range(1, int(steps.max()) + 1):
                if step > 1:
                    time.sleep(delay_s)
                self._note(f"step {step}")
                yield {
                    "step": np.full((rows, 1), step, np.int32),
                    "batch": np.full((rows, 1), rows, np.int32),
                    mfn.DONE: steps <= step,
                }
        finally:
            self._note("closed")

    def _note(self, line):
        if self.log:
            with open(self.log, "a") as handle:
                handle.write(f"{line}\n")
