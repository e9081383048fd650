"""mfn's JSON codec: KServe v2 and plain bodies both ways, every dtype, every malformed case, the limits."""

import json

import numpy as np
import pytest

import mfn
from mfn.handlers.dtypes import TRITON_TO_NUMPY
from mfn.runtime.codec import KSERVE_V2, PLAIN, Limits, ServerCodec, decode_request, encode_response
from mfn.runtime.codec.client import answer_outputs, encode_request, parse_data, read_answer, to_arrays
from mfn.runtime.codec.limits import nesting_depth
from mfn.runtime.loop import RequestFailure
from mfn.spec import Entrypoint, ModelSpec

SPEC = ModelSpec(
    name="m", entrypoint=Entrypoint(file="h.py", attribute="H"),
    inputs=[mfn.Tensor("x", "FP32", [2]), mfn.Tensor("text", "BYTES", [1])],
    outputs=[mfn.Tensor("y", "INT64", [1]), mfn.Tensor("echo", "BYTES", [1])],
)
MIXED = ModelSpec(
    name="mixed", entrypoint=Entrypoint(file="h.py", attribute="H"),
    inputs=[mfn.Tensor("text", "BYTES", [1]), mfn.Tensor("x", "FP32", [2]), mfn.Tensor("level", "UINT8", [1]),
            mfn.Tensor("flag", "BOOL", [1])],
    outputs=[mfn.Tensor("total", "FP32", [1])],
)
GOOD = {"text": ["hi"], "x": [1.5, 2], "level": [3], "flag": [True]}


def v2(**changes) -> dict:
    """A good KServe v2 body for MIXED, with some entries' fields changed (None removes a field)."""
    entries = []
    for name, data in GOOD.items():
        entry = {"name": name, "shape": [1, len(data)], "datatype": MIXED.inputs[list(GOOD).index(name)].dtype, "data": data}
        for key, value in changes.get(name, {}).items():
            if value is None:
                entry.pop(key)
            else:
                entry[key] = value
        entries.append(entry)
    return {"inputs": entries}


def refusal(body, spec=MIXED, limits=Limits()) -> RequestFailure:
    with pytest.raises(RequestFailure) as caught:
        decode_request(body if isinstance(body, (bytes, str)) else json.dumps(body).encode(), spec, limits)
    return caught.value


def test_kserve_v2_body_is_decoded_by_shape_and_answered_in_kind():
    body = {"inputs": [
        {"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]},
        {"name": "text", "shape": [2, 1], "datatype": "BYTES", "data": ["a", "\u00e9"]},
    ]}
    decoded = decode_request(json.dumps(body).encode(), SPEC)
    assert decoded.style == KSERVE_V2
    assert decoded.arrays["x"].dtype == np.float32 and decoded.arrays["x"].shape == (2, 2)
    assert decoded.arrays["text"].tolist() == [[b"a"], ["\u00e9".encode()]]
    answer = json.loads(encode_response({"y": np.array([[1], [2]]), "echo": np.array([[b"a"], [b"b"]], dtype=object)}, decoded.style, SPEC))
    assert answer["outputs"][0] == {"name": "y", "datatype": "INT64", "shape": [2, 1], "data": [1, 2]}
    assert answer["outputs"][1]["data"] == ["a", "b"]
    assert (answer["model_name"], answer["model_version"]) == ("m", "1")


def test_plain_body_gets_the_batch_dimension_when_a_single_row_is_sent():
    decoded = decode_request({"x": [1.5, 2], "text": ["hi"]}, SPEC)
    assert decoded.style == PLAIN
    assert decoded.arrays["x"].shape == (1, 2) and decoded.arrays["text"].shape == (1, 1)
    assert json.loads(encode_response({"y": np.array([[3]])}, PLAIN, SPEC)) == {"y": [[3]]}


def test_nested_kserve_v2_data_is_accepted_when_it_matches_the_shape():
    decoded = decode_request(v2(x={"data": [[1, 2]]}), MIXED)
    np.testing.assert_array_equal(decoded.arrays["x"], [[1, 2]])


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (v2(text={"data": [200000000]}), "input 'text' expects BYTES (text), got a number (200000000): send strings"),
        (v2(text={"data": [-1]}), "input 'text' expects BYTES (text), got a number (-1)"),
        (v2(text={"data": [None]}), "input 'text' expects BYTES (text), got null"),
        (v2(text={"data": [{}]}), "input 'text' expects BYTES (text), got an object"),
        (v2(text={"data": [True]}), "input 'text' expects BYTES (text), got true/false"),
        ({"text": [["a"], ["b", "c"]], "x": [[1, 2], [3, 4]]}, "input 'text' has rows of different lengths (ragged)"),
        (v2(x={"data": ["a", "b"]}), "input 'x' expects FP32 numbers, got text: send FP32 numbers"),
        (v2(x={"data": [1, None]}), "input 'x' expects FP32 numbers, got null"),
        (v2(x={"data": [1, {}]}), "input 'x' expects FP32 numbers, got an object"),
        (v2(x={"data": [True, False]}), "input 'x' expects FP32 numbers, got true/false"),
        (v2(x={"data": [1, True]}), "input 'x' expects FP32 numbers, got true/false among them"),
        ({"x": [[1, 2], [3]]}, "input 'x' has rows of different lengths (ragged)"),
        (v2(x={"shape": None}), "input 'x' needs \"shape\", a list of up to 32 non-negative integers"),
        (v2(x={"shape": [1, -2]}), "input 'x' needs \"shape\""),
        (v2(x={"shape": [1, True]}), "input 'x' needs \"shape\""),
        (v2(x={"shape": [1, 3]}), "input 'x': \"data\" holds 2 values nested as [2], but \"shape\" says [1, 3]"),
        (v2(x={"shape": [2**39, 2**39, 0], "data": []}), "input 'x': \"shape\" [549755813888, 549755813888, 0] is too large"),
        (v2(x={"shape": [1.0, 2]}), "input 'x' needs \"shape\""),
        (v2(x={"shape": [2**32, 2**32]}), ("input 'x': \"shape\" [4294967296, 4294967296] holds 18,446,744,073,709,551,616 "
                                           "values, more than a body of")),
        (v2(x={"shape": [10**12, 4]}), "input 'x': \"shape\" [1000000000000, 4] holds 4,000,000,000,000 values"),
        (v2(x={"shape": [2305843009213693953, 4]}), ("input 'x': \"shape\" [2305843009213693953, 4] has a dimension of "
                                                      "2,305,843,009,213,693,953, more than any request can hold")),
        (v2(x={"data": 5}), "input 'x' needs \"data\", a list of values in row-major order; got 5"),
        (v2(x={"data": None}), "input 'x' needs \"data\""),
        (v2(x={"datatype": "INT32"}), "input 'x' has datatype INT32, but the model declares FP32: send FP32 values"),
        (v2(x={"datatype": "float32"}), "input 'x' has datatype 'float32', which is not a KServe v2 datatype"),
        (v2(x={"datatype": 7}), "input 'x' has datatype 7, which is not a KServe v2 datatype"),
        (v2(level={"data": [float("nan")]}), "input 'level' expects UINT8 integers, got numbers with a fraction, NaN or Infinity"),
        (v2(level={"data": [2.5]}), "input 'level' expects UINT8 integers, got numbers with a fraction"),
        (v2(level={"data": [300]}), "input 'level' expects UINT8 integers from 0 to 255, got 300"),
        (v2(level={"data": [-1]}), "input 'level' expects UINT8 integers from 0 to 255, got -1"),
        (v2(level={"data": [10**30]}), "input 'level' expects UINT8 integers from 0 to 255, got 1000000000000000000000000000000"),
        (v2(level={"data": [1, 2**64 - 1]}), "input 'level' expects UINT8 integers from 0 to 255, got 18446744073709551615"),
        (v2(flag={"data": [1]}), "input 'flag' expects true/false, got integers: send true/false"),
        ({"inputs": [{"shape": [1]}]}, 'each entry of "inputs" must be an object with "name"'),
        ({"inputs": [7]}, 'each entry of "inputs" must be an object'),
        ({"inputs": {"name": "x"}}, '"inputs" must be a list of objects'),
        ({"inputs": [v2()["inputs"][0]] * 2}, "input 'text' is given twice"),
        ({"z": [1]}, "unknown input 'z': mixed takes ['flag', 'level', 'text', 'x']"),
        ({"x": {"a": 1}}, "input 'x' expects FP32 numbers, got an object"),
        (b"not json", "request body is not JSON"),
        (b'{"x": "\xff"}', "request body is not JSON"),
        (b"", "empty request body"),
        (b"[1, 2]", "request body must be a JSON object"),
        (b'"text"', "request body must be a JSON object"),
        (b'{"level": [[' + b"9" * 5000 + b"]]}", "request body is not JSON: Exceeds the limit"),
        (b'{"text": [["\\ud800"]]}', "input 'text' holds text that is not valid Unicode"),
    ],
)
def test_malformed_bodies_are_refused_with_400_naming_the_input(body, message):
    failure = refusal(body)
    assert message in failure.message
    assert failure.status == 400


@pytest.mark.parametrize("shape", [[2**32, 2**32], [2**31, 2**31, 4], [2**20] * 4, [10**12, 4]])
def test_a_shape_whose_count_overflows_int64_is_refused_on_every_json_path(shape):
    """numpy's int64 product of [2**32, 2**32] is 0: counted so, a huge shape would pass for an empty one."""
    entry = {"name": "x", "shape": shape, "datatype": "FP32", "data": [1, 2]}
    expected = f'input \'x\': "shape" {shape} holds {np.prod(shape, dtype=object):,} values, more than a body of'
    assert expected in refusal({"inputs": [entry]}).message
    with pytest.raises(RequestFailure, match="more than a body of 67,108,864 bytes"):
        ServerCodec(MIXED).decode({"inputs": [entry]})  # a body the server already parsed
    with pytest.raises(RequestFailure, match="more than a body of"):
        parse_data(json.dumps({"inputs": [entry]}))
    with pytest.raises(RequestFailure, match=r"input 'x'|output 'x'"):
        answer_outputs({"outputs": [entry]})


def test_an_unparsed_body_of_another_type_is_refused():
    with pytest.raises(RequestFailure, match="request body must be a JSON object"):
        ServerCodec(MIXED).decode(17)


@pytest.mark.parametrize("depth", [1_000, 5_000, 100_000])
def test_deep_nesting_is_refused_before_parsing(depth):
    failure = refusal(b'{"x": ' + b"[" * depth + b"]" * depth + b"}")
    assert f"nests {depth + 1} levels deep, more than the 7 its tensors need" in failure.message


def test_the_nesting_limit_is_the_declared_rank_plus_the_kserve_wrapper_and_a_margin():
    codec = ServerCodec(MIXED)
    assert codec.max_depth == 3 + 2 + 2
    allowed = {"inputs": [{"name": "x", "shape": [1, 2], "data": [[1, 2]], "parameters": {"a": {"b": 1}}}]}
    assert codec.decode(json.dumps(allowed).encode()).arrays["x"].shape == (1, 2)
    allowed["inputs"][0]["parameters"]["a"]["b"] = [[[1]]]
    with pytest.raises(RequestFailure, match="nests 8 levels deep"):
        codec.decode(json.dumps(allowed).encode())


def test_brackets_inside_strings_do_not_count_as_nesting():
    text = json.dumps({"text": [["[" * 500 + '\\"{' * 50 + "]" * 3]], "x": [[1, 2]]}).encode()
    assert nesting_depth(text, 7) == 3
    assert decode_request(text, MIXED).arrays["text"].shape == (1, 1)


def test_a_body_over_the_size_limit_is_refused_with_413():
    failure = refusal(v2(), limits=Limits(max_body_bytes=100))
    assert failure.status == 413 and "exceeds the limit of 100" in failure.message


def test_a_bytes_element_over_the_size_limit_is_refused_with_413():
    limits = Limits(max_bytes_element=10)
    failure = refusal(v2(text={"data": ["x" * 11]}), limits=limits)
    assert failure.status == 413 and "input 'text' has an element of 11 bytes, over the limit of 10" in failure.message
    assert decode_request(json.dumps(v2(text={"data": ["x" * 10]})).encode(), MIXED, limits).arrays["text"][0, 0] == b"x" * 10


def test_an_answer_with_bytes_that_are_not_utf8_fails_with_500_naming_the_output():
    with pytest.raises(RequestFailure) as caught:
        encode_response({"echo": np.array([[b"\xff"]], dtype=object)}, KSERVE_V2, SPEC)
    assert caught.value.status == 500 and "output 'echo' holds bytes that are not UTF-8 text" in caught.value.message


def test_non_finite_floats_are_written_and_read_as_nan_and_infinity_tokens():
    spec = SPEC.model_copy(update={"outputs": (mfn.Tensor("y", "FP32", [3]),)})
    body = encode_response({"y": np.array([[np.nan, np.inf, -np.inf]], np.float32)}, KSERVE_V2, spec)
    assert b'"data":[NaN,Infinity,-Infinity]' in body
    assert np.isnan(answer_outputs(read_answer(body))["y"][0, 0])
    decoded = decode_request(b'{"x": [[NaN, -Infinity]], "text": [["a"]]}', SPEC)
    assert np.isnan(decoded.arrays["x"][0, 0]) and decoded.arrays["x"][0, 1] == -np.inf


def values_of(dtype: str, rng: np.random.Generator) -> np.ndarray:
    """Two rows of three values of `dtype`, its extremes included."""
    if dtype == "BYTES":
        return np.array([[b"", "\u00e9t\u00e9".encode(), b"a b"], [b"x" * 50, "\U0001f600".encode(), b"{[\"]}"]], dtype=object)
    if dtype == "BOOL":
        return np.array([[True, False, True], [False, False, True]])
    numpy_type = TRITON_TO_NUMPY[dtype]
    if numpy_type.kind == "f":
        info = np.finfo(numpy_type)
        return np.array([[info.min, info.max, np.nan], [np.inf, -np.inf, rng.standard_normal()]], dtype=numpy_type)
    info = np.iinfo(numpy_type)
    return np.array([[info.min, info.max, 0], [1, info.max - 1, info.min + 1]], dtype=numpy_type)


@pytest.mark.parametrize("dtype", list(TRITON_TO_NUMPY))
@pytest.mark.parametrize("style", [KSERVE_V2, PLAIN])
def test_every_dtype_round_trips_client_to_server_and_back(dtype, style):
    spec = ModelSpec(name="echo", entrypoint=Entrypoint(file="h.py", attribute="H"),
                     inputs=[mfn.Tensor("v", dtype, [3])], outputs=[mfn.Tensor("v", dtype, [3])])
    values = values_of(dtype, np.random.default_rng(3))
    sent = to_arrays({"v": values.tolist()}, {"v": (dtype, 2)})
    body = encode_request(sent, {"v": dtype}) if style == KSERVE_V2 else json.dumps({"v": values.tolist()}, default=bytes.decode).encode()
    codec = ServerCodec(spec)
    received = codec.decode(body)
    assert received.style == style
    np.testing.assert_array_equal(received.arrays["v"], values)
    assert received.arrays["v"].dtype == values.dtype
    answer = codec.encode(received.arrays, style)
    if style == KSERVE_V2:
        returned = answer_outputs(read_answer(answer))["v"]
    else:
        returned = to_arrays(json.loads(answer), {"v": (dtype, 2)})["v"]
    np.testing.assert_array_equal(returned, values)
    assert returned.dtype == values.dtype


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"text": [[200000000]]}, "input 'text' expects BYTES (text), got a number (200000000)"),
        ({"x": [["a", "b"]]}, "input 'x' expects FP32 numbers, got text"),
        ({"x": [[1, 2], [3]]}, "input 'x' has rows of different lengths"),
        ({"level": [[300]]}, "input 'level' expects UINT8 integers from 0 to 255, got 300"),
        ({"x": np.array([["a", "b"]])}, "input 'x' expects FP32 numbers, got text"),
        ({"level": np.array([[1.5]])}, "input 'level' expects UINT8 integers, got numbers with a fraction"),
        ({"text": np.array([[1]])}, "input 'text' expects BYTES (text), got int64 numbers"),
        ({"text": json.loads("[" * 40 + '"a"' + "]" * 40)}, "input 'text' has rows of different lengths (ragged) or nests deeper than 32"),
        ({"nope": [1]}, "mixed has no input(s) ['nope']"),
    ],
)
def test_client_values_the_model_cannot_take_are_refused_before_sending(inputs, message):
    declared = {tensor.name: (tensor.dtype, len(tensor.shape) + 1) for tensor in MIXED.inputs}
    with pytest.raises(RequestFailure) as caught:
        to_arrays(inputs, declared, "mixed")
    assert message in caught.value.message


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"x": [[1, "a"]]}, "input 'x' mixes text with numbers"),
        ({"x": [[1, True]]}, "input 'x' expects INT64 numbers, got true/false among them"),
        ({"x": json.loads("[" * 40 + "1" + "]" * 40)}, "input 'x' nests deeper than 32 levels"),
        ({"x": [[b"\xff"]]}, "input 'x' holds bytes that are not UTF-8 text"),
    ],
)
def test_client_values_of_undeclared_type_must_still_be_json_tensors(inputs, message):
    with pytest.raises(RequestFailure) as caught:
        encode_request(to_arrays(inputs))
    assert message in caught.value.message


def test_client_sends_text_and_numbers_without_datatypes_when_the_server_holds_them():
    body = json.loads(encode_request(to_arrays({"text": [["hi", b"there"]], "x": [1, 2]})))
    assert body == {"inputs": [{"name": "text", "shape": [1, 2], "data": ["hi", "there"]},
                               {"name": "x", "shape": [2], "data": [1, 2]}]}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"inputs": [{"name": "x", "data": [1, 2]}]}', "input 'x' needs \"shape\""),
        ('{"inputs": [{"name": "x", "shape": [2], "data": [1, "a"]}]}', "input 'x' mixes text with numbers"),
        ('{"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "data": [1]}]}', "input 'x' expects BYTES (text)"),
        ("[1]", "the text must be a JSON object"),
        ("{oops", "the text is not JSON"),
        ("{" * 50 + "}" * 50, "the text nests 50 levels deep"),
    ],
)
def test_invoke_data_is_read_with_the_same_rules(text, message):
    with pytest.raises(RequestFailure) as caught:
        parse_data(text)
    assert message in caught.value.message


def test_invoke_data_keeps_values_by_name_and_reads_kserve_entries():
    assert parse_data('{"x": [[1, 2]]}') == {"x": [[1, 2]]}
    assert parse_data('{"inputs": [[1, 2]]}') == {"inputs": [[1, 2]]}  # a model may call an input "inputs"
    entries = parse_data('{"inputs": [{"name": "t", "shape": [1, 1], "data": ["a"]}, {"name": "n", "shape": [2], "data": [1, 2]}]}')
    assert entries["t"].tolist() == [[b"a"]] and entries["n"].dtype == np.int64


def test_answers_that_are_not_kserve_v2_are_refused():
    with pytest.raises(RequestFailure, match='answer has no "outputs" list'):
        answer_outputs(read_answer(b'{"something": 1}'))
    with pytest.raises(RequestFailure, match="answer nests"):
        read_answer(b"[" * 10_000 + b"]" * 10_000)
