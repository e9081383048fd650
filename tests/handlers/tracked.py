"""Answers with its package's version, so rollout tests can tell the tracks apart; `x` is a delay in ms for slow
requests (tests send -1 for none). Version 3 fails every such request: a broken release to roll back; version 4
takes HANG_S over each: a release that hangs. The packaging check's sample rows (0-9) pass on every version."""

import time

import numpy as np

import mfn

BROKEN_VERSION = 3
HANGING_VERSION = 4
HANG_S = 10.0


class Tracked(mfn.Handler):
    name = "tracked"
    inputs = [mfn.Tensor("x", "INT32", [1])]
    outputs = [mfn.Tensor("served_by", "INT32", [1])]
    batching = mfn.Batching(max_batch_size=8)

    def setup(self, ctx):
        self.version = ctx.version

    def predict(self, inputs):
        if self.version == BROKEN_VERSION and (inputs["x"] < 0).any():
            raise ValueError(f"version {BROKEN_VERSION} is broken")
        if self.version == HANGING_VERSION and (inputs["x"] < 0).any():
            time.sleep(HANG_S)
        time.sleep(max(int(inputs["x"].max()), 0) / 1000)
        return {"served_by": np.full_like(inputs["x"], self.version)}
