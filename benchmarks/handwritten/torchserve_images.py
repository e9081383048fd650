"""A hand-written TorchServe handler for the image benchmark, without mfn: what an expert writes for speed.

Bodies are raw little-endian FP32 images (n x 3 x 224 x 224, n from the length) on REST and gRPC alike,
answers the raw FP32 logits; one forward pass per TorchServe batch. Packaged as "floor_hand", it runs no model
and answers zeros: what is left of a call's time is the server's own.
"""

import os

import numpy as np
import torch
from ts.torch_handler.base_handler import BaseHandler

IMAGE = (3, 224, 224)


class HandwrittenImages(BaseHandler):
    def initialize(self, context):
        model_dir = context.system_properties["model_dir"]
        self.floor = context.manifest["model"]["modelName"] == "floor_hand"
        self.model = torch.jit.load(os.path.join(model_dir, "weights.pt")).eval()
        self.initialized = True

    def handle(self, data, context):
        arrays = [np.frombuffer(row.get("body") or row.get("data"), dtype="<f4").reshape(-1, *IMAGE) for row in data]
        if self.floor:
            return [bytes(4000 * len(array)) for array in arrays]
        with torch.inference_mode():
            logits = self.model(torch.from_numpy(np.concatenate(arrays))).numpy()
        answers, start = [], 0
        for array in arrays:
            answers.append(logits[start:start + len(array)].tobytes())
            start += len(array)
        return answers
