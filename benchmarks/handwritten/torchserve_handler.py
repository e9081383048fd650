"""A hand-written TorchServe BaseHandler for the benchmark models, without mfn.

It reads the same KServe v2 JSON bodies mfn's adapter reads and answers in the same shape, and runs
one forward pass per TorchServe batch.
"""

import json
import os

import numpy as np
import torch
from ts.torch_handler.base_handler import BaseHandler

DTYPES = {"FP32": np.float32, "INT64": np.int64}


class Handwritten(BaseHandler):
    def initialize(self, context):
        model_dir = context.system_properties["model_dir"]
        with open(os.path.join(model_dir, "benchmark.json")) as handle:
            self.kind = json.load(handle)["model"]
        if self.kind in ("mlp", "wide_mlp"):
            if self.kind == "mlp":
                torch.set_num_threads(1)
            self.model = torch.jit.load(os.path.join(model_dir, "weights.pt")).eval()
        self.initialized = True

    def handle(self, data, context):
        arrays = []
        for row in data:
            body = row.get("body") or row.get("data")
            body = json.loads(body) if isinstance(body, (bytes, bytearray, str)) else body
            item = body["inputs"][0]
            values = np.array(item["data"], dtype=object if item["datatype"] == "BYTES" else DTYPES[item["datatype"]])
            arrays.append(values.reshape(item["shape"]))
        rows = [array.shape[0] for array in arrays]
        outputs = self.compute(np.concatenate(arrays))
        answers, start = [], 0
        for count in rows:
            answers.append({"outputs": [
                {"name": name, "shape": [count, *value.shape[1:]], "datatype": datatype, "data": value[start:start + count].ravel().tolist()}
                for name, (datatype, value) in outputs.items()
            ]})
            start += count
        return answers

    def compute(self, batch):
        if self.kind == "text_stats":
            texts = list(batch[:, 0])
            return {
                "n_chars": ("INT64", np.array([[len(t)] for t in texts], dtype=np.int64)),
                "n_words": ("INT64", np.array([[len(t.split())] for t in texts], dtype=np.int64)),
                "upper": ("BYTES", np.array([[t.upper()] for t in texts], dtype=object)),
            }
        with torch.inference_mode():
            result = self.model(torch.from_numpy(batch))
        if self.kind == "wide_mlp":
            return {"logits": ("FP32", result.numpy())}
        probs = torch.softmax(result, dim=1).numpy()
        return {"probs": ("FP32", probs), "label": ("INT64", probs.argmax(axis=1, keepdims=True).astype(np.int64))}
