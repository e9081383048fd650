"""Sleeps as long as its requests ask, so a test can keep requests in flight longer than any predict before.

`seconds` is each row's wish; a batch sleeps for the longest one and answers every row with it. A wish of exactly
CRASH seconds ends the serving process mid-request, as a crash in native code would: the server fails the request.
"""

import os
import time

import numpy as np

import mfn

CRASH = -7.0


class Sleepy(mfn.Handler):
    name = "sleepy"
    inputs = [mfn.Tensor("seconds", "FP32", [1])]
    outputs = [mfn.Tensor("slept", "FP32", [1])]
    batching = mfn.Batching(max_batch_size=8, max_queue_delay_us=200_000)

    def predict(self, inputs):
        if (inputs["seconds"] == CRASH).any():
            os._exit(3)
        longest = float(inputs["seconds"].max())
        time.sleep(longest)
        return {"slept": np.full_like(inputs["seconds"], longest)}
