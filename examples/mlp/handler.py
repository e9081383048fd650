"""A small TorchScript MLP classifier served as a model function."""

import numpy as np

import mfn


class MLP(mfn.Handler):
    name = "mlp"
    version = 1
    inputs = [mfn.Tensor("features", "FP32", [4])]
    outputs = [mfn.Tensor("probs", "FP32", [3]), mfn.Tensor("label", "INT64", [1])]
    batching = mfn.Batching(max_batch_size=32, max_queue_delay_us=2000, preferred_batch_sizes=[8, 16])
    instances = [mfn.Instances(kind="cpu", count=2)]
    artifacts = {"weights": "weights.pt"}
    requirements = ["torch>=2.1"]

    def setup(self, ctx: mfn.Context) -> None:
        import torch

        # Several instances share the machine's cores; one thread each avoids oversubscription.
        torch.set_num_threads(1)
        self.torch = torch
        self.model = torch.jit.load(ctx.artifact("weights"), map_location=ctx.device).eval()
        self.device = ctx.device

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self.torch.inference_mode():
            features = self.torch.from_numpy(inputs["features"]).to(self.device)
            probs = self.torch.softmax(self.model(features), dim=1)
        probs_np = probs.cpu().numpy()
        return {"probs": probs_np, "label": probs_np.argmax(axis=1, keepdims=True).astype(np.int64)}
