"""Property-based fuzzing of the codec: any body gives a correct decode or a 4xx RequestFailure, never another exception."""

import json

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mfn
from mfn.handlers.dtypes import TRITON_TO_NUMPY
from mfn.runtime.codec import Limits, ServerCodec
from mfn.runtime.codec.client import (answer_outputs, encode_request, parse_data, read_answer, read_binary_answer,
                                      to_arrays)
from mfn.runtime.codec.limits import nesting_depth
from mfn.runtime.loop import RequestFailure
from mfn.spec import Entrypoint, ModelSpec

SPEC = ModelSpec(
    name="fuzz", entrypoint=Entrypoint(file="h.py", attribute="H"),
    inputs=[mfn.Tensor("text", "BYTES", [1]), mfn.Tensor("x", "FP32", [2]), mfn.Tensor("level", "UINT8", [1]),
            mfn.Tensor("flag", "BOOL", [1]), mfn.Tensor("n", "INT64", [-1])],
    outputs=[mfn.Tensor("y", "FP32", [1])],
)
# Small limits, so that the fuzzer reaches them too.
CODEC = ServerCodec(SPEC, Limits(max_body_bytes=4096, max_bytes_element=64))
DECLARED = {tensor.name: tensor.dtype for tensor in SPEC.inputs}
VALID = json.dumps({"inputs": [
    {"name": "text", "shape": [2, 1], "datatype": "BYTES", "data": ["a", "b"]},
    {"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1.5, 2, 3, float("nan")]},
    {"name": "level", "shape": [2, 1], "datatype": "UINT8", "data": [0, 255]},
    {"name": "flag", "shape": [2, 1], "datatype": "BOOL", "data": [True, False]},
    {"name": "n", "shape": [2, 3], "datatype": "INT64", "data": [[1, 2, 3], [4, 5, -6]]},
]}).encode()
FUZZ = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=True),
    st.text(max_size=8), st.sampled_from(["", "[", "\ud800", "NaN", "true"]),
)
json_values = st.recursive(
    scalars, lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=20,
)
names = st.sampled_from([*DECLARED, "inputs", "other", ""])
shapes = st.one_of(st.lists(st.integers(min_value=-2, max_value=5), max_size=4), json_values)
entries = st.fixed_dictionaries(
    {"name": names},
    optional={"shape": shapes, "datatype": st.sampled_from([*TRITON_TO_NUMPY, "float32", 3]), "data": json_values,
              "parameters": json_values},
)
v2_bodies = st.builds(lambda items: {"inputs": items}, st.lists(entries, max_size=6))
plain_bodies = st.dictionaries(names, json_values, max_size=6)


def decoded_or_refused(body, header_length: int | None = None) -> None:
    """The property: a decode with the declared dtypes, or a RequestFailure with a 4xx status."""
    try:
        decoded = CODEC.decode(body, header_length)
    except RequestFailure as failure:
        assert 400 <= failure.status < 500, failure
        assert failure.message
        return
    for name, array in decoded.arrays.items():
        assert isinstance(array, np.ndarray)
        assert array.dtype == TRITON_TO_NUMPY[DECLARED[name]], (name, array.dtype)
        if DECLARED[name] == "BYTES":
            assert all(type(item) is bytes for item in array.ravel())


@FUZZ
@given(st.one_of(v2_bodies, plain_bodies, json_values))
def test_any_json_document_decodes_or_is_refused(document):
    decoded_or_refused(json.dumps(document).encode())
    decoded_or_refused(document if isinstance(document, dict) else json.dumps(document))


@FUZZ
@given(st.binary(max_size=300))
def test_any_bytes_decode_or_are_refused(body):
    decoded_or_refused(body)


@FUZZ
@given(st.data())
def test_mutated_valid_bodies_decode_or_are_refused(data):
    body = bytearray(VALID)
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        position = data.draw(st.integers(min_value=0, max_value=len(body)))
        action = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate", "repeat"]))
        if action == "flip" and position < len(body):
            body[position] = data.draw(st.sampled_from(b'[]{}",:0-.eE\\ntfu' + bytes([0xFF])))
        elif action == "insert":
            body[position:position] = data.draw(st.sampled_from([b"[", b"]", b"{", b'"', b"null", b"true", b"1e999", b"-0"]))
        elif action == "delete":
            del body[position:position + data.draw(st.integers(min_value=1, max_value=8))]
        elif action == "truncate":
            del body[position:]
        else:
            body[position:position] = body[position:position + 20] * data.draw(st.integers(min_value=1, max_value=300))
    decoded_or_refused(bytes(body))


# Dimensions whose products overflow int64 (2**32 * 2**32 is 0 there) or pass numpy's size limits, among ordinary ones.
hostile_dims = st.one_of(
    st.sampled_from([0, 1, 2, 3, 2**31, 2**32, 2**32 + 1, 2**39, 2**40 - 1, 2**40, 2**61 + 1, 2**63, 2**64, -1]),
    st.integers(min_value=0, max_value=2**64),
)
hostile_shapes = st.lists(hostile_dims, min_size=1, max_size=5)


@FUZZ
@given(names, hostile_shapes, st.sampled_from(list(TRITON_TO_NUMPY)), st.binary(max_size=64))
def test_any_shape_with_little_data_decodes_or_is_refused_as_binary_and_as_json(name, shape, datatype, data):
    entry = {"name": name, "shape": shape, "datatype": datatype}
    header = json.dumps({"inputs": [{**entry, "parameters": {"binary_data_size": len(data)}}]}).encode()
    decoded_or_refused(header + data, len(header))
    decoded_or_refused(json.dumps({"inputs": [{**entry, "data": list(data)}]}).encode())
    answer = json.dumps({"outputs": [{**entry, "parameters": {"binary_data_size": len(data)}}]}).encode()
    try:
        read_binary_answer(answer + data, len(answer))
    except RequestFailure as failure:
        assert failure.message


@FUZZ
@given(st.dictionaries(names, json_values, max_size=4))
def test_any_client_values_become_arrays_or_are_refused(inputs):
    for declared in (None, {name: (dtype, 2) for name, dtype in DECLARED.items()}):
        try:
            arrays = to_arrays(inputs, declared)
            body = encode_request(arrays)
        except RequestFailure as failure:
            assert failure.message
            continue
        assert json.loads(body)["inputs"] is not None


@FUZZ
@given(st.one_of(json_values.map(json.dumps), st.text(max_size=200)))
def test_any_invoke_data_is_read_or_refused(text):
    try:
        parse_data(text)
    except RequestFailure as failure:
        assert failure.message


def depth_of(document) -> int:
    if isinstance(document, list):
        return 1 + max(map(depth_of, document), default=0)
    if isinstance(document, dict):
        return 1 + max(map(depth_of, document.values()), default=0)
    return 0


@FUZZ
@given(st.recursive(scalars | st.text(alphabet='[]{}"\\ab', max_size=6), lambda children: st.lists(children, max_size=3)
                    | st.dictionaries(st.text(alphabet='[]{}"\\a', max_size=3), children, max_size=2), max_leaves=30),
       st.integers(min_value=0, max_value=8))
def test_nesting_depth_is_exact_past_the_limit_whatever_the_strings_hold(document, limit):
    body, depth = json.dumps(document).encode(), depth_of(document)
    measured = nesting_depth(body, limit)
    assert measured == depth if depth > limit else measured <= limit


def elements(dtype: str) -> st.SearchStrategy:
    """Any value of `dtype`: every integer in range, every float of its width, NaN and infinities included."""
    numpy_type = TRITON_TO_NUMPY[dtype]
    if dtype == "BYTES":
        return st.text(max_size=6).map(str.encode)  # JSON carries BYTES as text
    if dtype == "BOOL":
        return st.booleans()
    if numpy_type.kind == "f":
        return st.floats(width=8 * numpy_type.itemsize)
    info = np.iinfo(numpy_type)
    return st.integers(min_value=int(info.min), max_value=int(info.max))


@st.composite
def dtype_and_rows(draw) -> tuple[str, np.ndarray]:
    """A dtype and one to three rows of two of its values."""
    dtype = draw(st.sampled_from(list(TRITON_TO_NUMPY)))
    rows = draw(st.integers(min_value=1, max_value=3))
    values = draw(st.lists(elements(dtype), min_size=2 * rows, max_size=2 * rows))
    array = np.empty(2 * rows, dtype=TRITON_TO_NUMPY[dtype])
    array[:] = values
    return dtype, array.reshape(rows, 2)


@FUZZ
@given(dtype_and_rows())
def test_any_array_round_trips_both_ways(dtype_and_array):
    dtype, array = dtype_and_array
    spec = ModelSpec(name="echo", entrypoint=Entrypoint(file="h.py", attribute="H"),
                     inputs=[mfn.Tensor("v", dtype, [2])], outputs=[mfn.Tensor("v", dtype, [2])])
    codec = ServerCodec(spec)
    received = codec.decode(encode_request(to_arrays({"v": array}, {"v": (dtype, 2)}), {"v": dtype})).arrays["v"]
    np.testing.assert_array_equal(received, array)
    assert received.dtype == array.dtype
    returned = answer_outputs(read_answer(codec.encode({"v": received}, "v2")))["v"]
    np.testing.assert_array_equal(returned, array)
    assert returned.dtype == array.dtype
