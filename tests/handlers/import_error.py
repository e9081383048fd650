import mfn
import a_module_that_does_not_exist  # noqa: F401


class Broken(mfn.Handler):
    name = "broken"
    inputs = [mfn.Tensor("x", "FP32", [1])]
    outputs = [mfn.Tensor("y", "FP32", [1])]

    def predict(self, inputs):
        return {"y": inputs["x"]}
