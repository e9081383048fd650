"""mfn's TorchServe adapter, the handler of every archive mfn builds.

It only translates TorchServe's request rows and per-request statuses; decoding JSON bodies, the
batch loop and the handler loading are mfn's shared runtime, the same code the Triton adapter runs.
"""

import os
from pathlib import Path

from ts.torch_handler.base_handler import BaseHandler

try:
    from mfn.archiver.ts_metrics import TorchServeMetricFactory
    from mfn.runtime import codec
    from mfn.runtime.bundle import load_bundle
    from mfn.runtime.loop import RequestFailure
except ImportError as error:
    raise ImportError(
        "mfn is not importable by the TorchServe worker: install mfn into the Python environment TorchServe runs"
    ) from error


class MfnHandler(BaseHandler):
    """Serves one packaged mfn handler."""

    def initialize(self, context):
        properties = context.system_properties
        gpu_id = properties.get("gpu_id")
        device = f"cuda:{gpu_id}" if gpu_id is not None and _cuda_available() else "cpu"
        self.model = load_bundle(
            Path(properties["model_dir"]),
            device=device,
            instance=f"worker-{os.getpid()}",
            metrics=TorchServeMetricFactory(context),
        )
        self.decoder = codec.RequestDecoder(self.model.spec)
        self.initialized = True

    def handle(self, data, context):
        decoded = [self._decode(row) for row in data]
        outcomes = self.model.loop.run([item if isinstance(item, RequestFailure) else item.arrays for item in decoded])
        return [self._encode(index, item, outcome, context) for index, (item, outcome) in enumerate(zip(decoded, outcomes))]

    def _decode(self, row):
        body = row.get("body") if row.get("body") is not None else row.get("data")
        try:
            return self.decoder.decode(body)
        except RequestFailure as failure:
            return failure

    def _encode(self, index, item, outcome, context):
        if isinstance(outcome, RequestFailure):
            context.set_response_status(code=outcome.status, phrase=outcome.message, idx=index)
            return {"error": outcome.message}
        return codec.encode_response(outcome, item.style, self.model.spec)


def _cuda_available():
    import torch

    return torch.cuda.is_available()
