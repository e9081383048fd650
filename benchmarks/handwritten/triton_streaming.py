"""A hand-written decoupled TritonPythonModel for the streaming benchmark, without mfn: for each request, one
response per token through its response sender, then the final flag."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            count = pb_utils.get_input_tensor_by_name(request, "count").as_numpy()
            rows = count.shape[0]
            for index in range(int(count.max())):
                token = pb_utils.Tensor("token", np.full((rows, 1), index, np.int32))
                sender.send(pb_utils.InferenceResponse(output_tensors=[token]))
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
