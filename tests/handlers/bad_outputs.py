"""Handlers whose outputs disagree with their declarations in name, dtype or shape."""

import sys

import numpy as np

import mfn


class _Base(mfn.Handler):
    inputs = [mfn.Tensor("x", "FP32", [3])]
    outputs = [mfn.Tensor("y", "FP32", [3])]


class WrongName(_Base):
    name = "wrong_name"

    def predict(self, inputs):
        return {"z": inputs["x"]}


class WrongDtype(_Base):
    name = "wrong_dtype"

    def predict(self, inputs):
        return {"y": inputs["x"].astype(np.float64)}


class WrongShape(_Base):
    name = "wrong_shape"

    def predict(self, inputs):
        return {"y": inputs["x"][:, :2]}


class WrongRows(_Base):
    name = "wrong_rows"

    def predict(self, inputs):
        return {"y": inputs["x"][:1]}


class SetupFails(_Base):
    name = "setup_fails"

    def setup(self, ctx):
        raise RuntimeError("weights are corrupt")

    def predict(self, inputs):
        return {"y": inputs["x"]}


class BadName(_Base):
    name = "bad name"

    def predict(self, inputs):
        return {"y": inputs["x"]}


class BadSpec(_Base):
    name = "bad_spec"
    batching = mfn.Batching(max_batch_size=4)
    instances = [mfn.Instances(kind="gpu"), mfn.Instances(kind="gpu")]

    def predict(self, inputs):
        return {"y": inputs["x"]}


class FailsToLoad(_Base):
    """Passes packaging but fails inside the server, where its marker file is absent."""

    name = "fails_to_load"

    def setup(self, ctx):
        if ctx.model_dir.name.isdigit():
            raise RuntimeError("cannot open the model store from the server")

    def predict(self, inputs):
        return {"y": inputs["x"]}


class FailsInATorchServeWorker(_Base):
    """Passes packaging but its setup fails in a TorchServe worker, two of its own frames deep."""

    name = "fails_in_a_worker"

    def setup(self, ctx):
        if "model_service_worker" in sys.argv[0]:
            self.open_weights()

    def open_weights(self):
        raise RuntimeError("weights.bin is corrupt: download it again")

    def predict(self, inputs):
        return {"y": inputs["x"]}
