"""A hand-written streaming TorchServe handler for the benchmark, without mfn: one intermediate response per
token for the whole batch, one JSON line each, and an end line as the final response."""

import json

from ts.handler_utils.utils import send_intermediate_predict_response
from ts.torch_handler.base_handler import BaseHandler


class HandwrittenStreaming(BaseHandler):
    def initialize(self, context):
        self.initialized = True

    def handle(self, data, context):
        counts = []
        for row in data:
            body = row.get("body") or row.get("data")
            body = json.loads(body) if isinstance(body, (bytes, bytearray, str)) else body
            counts.append(int(body["inputs"][0]["data"][0]))
        for index in range(max(counts)):
            lines = [json.dumps({"outputs": [{"name": "token", "datatype": "INT32", "shape": [1, 1], "data": [index]}]})
                     .encode() + b"\n" for _ in data]
            send_intermediate_predict_response(lines, context.request_ids, "Intermediate response", 200, context)
        return [b'{"end": true}\n' for _ in data]
