"""A hand-written TritonPythonModel: what a Triton expert writes for these models, without mfn.

One file serves the benchmark models (and the image benchmark's "floor", which runs no model); `MODEL` in the config's parameters picks the compute.
It batches every request of an execute() into one call, like mfn's adapter, so the comparison is fair.
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.kind = config["parameters"]["MODEL"]["string_value"]
        if self.kind in ("mlp", "wide_mlp"):
            import torch

            torch.set_num_threads(1 if self.kind == "mlp" else torch.get_num_threads())
            self.torch = torch
            weights = config["parameters"]["WEIGHTS"]["string_value"]
            self.model = torch.jit.load(f"{args['model_repository']}/{args['model_version']}/{weights}").eval()
        if self.kind == "resnet":
            import torch

            self.torch = torch
            weights = config["parameters"]["WEIGHTS"]["string_value"]
            self.model = torch.jit.load(f"{args['model_repository']}/{args['model_version']}/{weights}").eval()
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]

    def execute(self, requests):
        arrays = [pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy() for request in requests]
        rows = [array.shape[0] for array in arrays]
        batch = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
        outputs = self.compute(batch)
        responses, start = [], 0
        for count in rows:
            tensors = [pb_utils.Tensor(name, value[start:start + count]) for name, value in outputs.items()]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += count
        return responses

    def compute(self, batch):
        if self.kind == "floor":  # the server's own cost: the image benchmark's logits, with no model run
            return {self.output_name: np.zeros((len(batch), 1000), dtype=np.float32)}
        if self.kind == "text_stats":
            texts = [value.decode("utf-8") for value in batch[:, 0]]
            return {
                "n_chars": np.array([[len(t)] for t in texts], dtype=np.int64),
                "n_words": np.array([[len(t.split())] for t in texts], dtype=np.int64),
                "upper": np.array([[t.upper().encode("utf-8")] for t in texts], dtype=object),
            }
        with self.torch.inference_mode():
            result = self.model(self.torch.from_numpy(batch))
        if self.kind == "wide_mlp":
            return {"logits": result.numpy()}
        if self.kind == "resnet":
            return {self.output_name: result.numpy()}
        probs = self.torch.softmax(result, dim=1).numpy()
        return {"probs": probs, "label": probs.argmax(axis=1, keepdims=True).astype(np.int64)}
