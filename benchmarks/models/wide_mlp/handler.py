"""A compute-bound model function: a ~10M-parameter MLP on the CPU (weights made by make_weights.py)."""

import numpy as np

import mfn


class WideMLP(mfn.Handler):
    name = "wide_mlp"
    inputs = [mfn.Tensor("features", "FP32", [512])]
    outputs = [mfn.Tensor("logits", "FP32", [10])]
    batching = mfn.Batching(max_batch_size=32, max_queue_delay_us=2000)
    instances = [mfn.Instances(kind="cpu", count=1)]
    artifacts = {"weights": "weights.pt"}
    requirements = ["torch>=2.1"]

    def setup(self, ctx: mfn.Context) -> None:
        import torch

        self.torch = torch
        self.model = torch.jit.load(ctx.artifact("weights"), map_location=ctx.device).eval()

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self.torch.inference_mode():
            return {"logits": self.model(self.torch.from_numpy(inputs["features"])).numpy()}
