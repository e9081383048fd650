import mfn


class NoPredict(mfn.Handler):
    name = "no_predict"
    inputs = [mfn.Tensor("x", "FP32", [1])]
    outputs = [mfn.Tensor("y", "FP32", [1])]
