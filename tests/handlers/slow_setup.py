"""Loads slowly when $MFN_TEST_SETUP_DELAY_S says so (packaging runs it without), so a test can interrupt a
deploy while the model loads."""

import os
import time

import mfn


class SlowSetup(mfn.Handler):
    name = "slow_setup"
    inputs = [mfn.Tensor("x", "FP32", [2])]
    outputs = [mfn.Tensor("y", "FP32", [2])]

    def setup(self, ctx):
        time.sleep(float(os.environ.get("MFN_TEST_SETUP_DELAY_S", "0")))

    def predict(self, inputs):
        return {"y": inputs["x"]}
