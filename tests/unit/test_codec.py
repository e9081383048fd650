"""JSON bodies as TorchServe hands them to mfn's adapter: KServe v2 and plain shapes."""

import json

import numpy as np
import pytest

import mfn
from mfn.runtime.codec import KSERVE_V2, PLAIN, decode_request, encode_response
from mfn.runtime.loop import RequestFailure
from mfn.spec import Entrypoint, ModelSpec

SPEC = ModelSpec(
    name="m", entrypoint=Entrypoint(file="h.py", attribute="H"),
    inputs=[mfn.Tensor("x", "FP32", [2]), mfn.Tensor("text", "BYTES", [1])],
    outputs=[mfn.Tensor("y", "INT64", [1]), mfn.Tensor("echo", "BYTES", [1])],
)


def test_kserve_v2_body_is_decoded_by_shape_and_answered_in_kind():
    body = {"inputs": [
        {"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]},
        {"name": "text", "shape": [2, 1], "datatype": "BYTES", "data": ["a", "\u00e9"]},
    ]}
    decoded = decode_request(json.dumps(body).encode(), SPEC)
    assert decoded.style == KSERVE_V2
    assert decoded.arrays["x"].dtype == np.float32 and decoded.arrays["x"].shape == (2, 2)
    assert decoded.arrays["text"].tolist() == [[b"a"], ["\u00e9".encode()]]
    answer = encode_response({"y": np.array([[1], [2]]), "echo": np.array([[b"a"], [b"b"]], dtype=object)}, decoded.style, SPEC)
    assert answer["outputs"][0] == {"name": "y", "datatype": "INT64", "shape": [2, 1], "data": [1, 2]}
    assert answer["outputs"][1]["data"] == ["a", "b"]
    assert (answer["model_name"], answer["model_version"]) == ("m", "1")


def test_plain_body_gets_the_batch_dimension_when_a_single_row_is_sent():
    decoded = decode_request({"x": [1.5, 2], "text": ["hi"]}, SPEC)
    assert decoded.style == PLAIN
    assert decoded.arrays["x"].shape == (1, 2) and decoded.arrays["text"].shape == (1, 1)
    assert encode_response({"y": np.array([[3]])}, PLAIN, SPEC) == {"y": [[3]]}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "request body is not JSON"),
        (None, "empty request body"),
        ([1, 2], "must be a JSON object"),
        ({"z": [1]}, "unknown input(s) ['z']"),
        ({"x": [["a", "b"]]}, "'x' expects FP32 values, got strings"),
        ({"x": [[1, 2], [3]]}, "'x' is ragged"),
        ({"inputs": [{"name": "x", "datatype": "INT32", "shape": [1, 2], "data": [1, 2]}]}, "has datatype INT32, but the model expects FP32"),
        ({"inputs": [{"name": "x", "shape": [1, 3], "data": [1, 2]}]}, "2 values do not fit shape [1, 3]"),
        ({"inputs": [{"shape": [1]}]}, 'needs a "name"'),
    ],
)
def test_malformed_bodies_are_refused_with_the_reason(body, message):
    with pytest.raises(RequestFailure) as caught:
        decode_request(body, SPEC)
    assert message in caught.value.message
    assert caught.value.status == 400


def test_integers_for_a_float_input_are_accepted_but_fractions_for_an_integer_input_are_not():
    spec = SPEC.model_copy(update={"inputs": (mfn.Tensor("n", "INT64", [1]),)})
    assert decode_request({"n": [[3]]}, spec).arrays["n"].dtype == np.int64
    with pytest.raises(RequestFailure, match="expects INT64 values, got numbers with fractions"):
        decode_request({"n": [[3.5]]}, spec)
