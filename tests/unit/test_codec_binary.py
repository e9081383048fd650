"""The KServe v2 binary tensor data extension in mfn's codec: both directions, every datatype, every inconsistency, the limits."""

import json
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mfn
from mfn.handlers.dtypes import TRITON_TO_NUMPY
from mfn.runtime.codec import KSERVE_V2, Limits, ServerCodec
from mfn.runtime.codec.binary import split_answer, tensor_bytes
from mfn.runtime.codec.client import encode_binary_request, read_binary_answer
from mfn.runtime.codec.limits import MAX_BODY_BYTES, MIB, body_limit
from mfn.runtime.loop import RequestFailure
from mfn.spec import Entrypoint, ModelSpec

ENTRYPOINT = Entrypoint(file="h.py", attribute="H")
SPEC = ModelSpec(
    name="m", entrypoint=ENTRYPOINT,
    inputs=[mfn.Tensor("x", "FP32", [2]), mfn.Tensor("text", "BYTES", [1]), mfn.Tensor("level", "UINT8", [1])],
    outputs=[mfn.Tensor("y", "INT64", [1]), mfn.Tensor("echo", "BYTES", [1])],
)
CODEC = ServerCodec(SPEC)
GOOD = {"x": np.array([[1.5, -2], [0.25, 3]], dtype=np.float32), "text": np.array([[b"a"], ["\u00e9".encode()]], dtype=object),
        "level": np.array([[0], [255]], dtype=np.uint8)}


def body_of(document: dict, *buffers: bytes) -> tuple[bytes, int]:
    header = json.dumps(document).encode()
    return header + b"".join(buffers), len(header)


def refusal(body: bytes, header_length, codec=CODEC) -> RequestFailure:
    with pytest.raises(RequestFailure) as caught:
        codec.decode(body, header_length)
    return caught.value


@pytest.mark.parametrize("datatype", [name for name in TRITON_TO_NUMPY if name != "BYTES"])
def test_every_numeric_datatype_round_trips_bit_for_bit(datatype):
    spec = ModelSpec(name="t", entrypoint=ENTRYPOINT, inputs=[mfn.Tensor("v", datatype, [3])], outputs=[mfn.Tensor("w", datatype, [3])])
    values = np.array([[0, 1, 0], [1, 1, 0]]).astype(TRITON_TO_NUMPY[datatype])
    body, length = encode_binary_request({"v": values})
    decoded = ServerCodec(spec).decode(body, str(length))
    assert decoded.arrays["v"].dtype == values.dtype
    np.testing.assert_array_equal(decoded.arrays["v"], values)
    answer, answer_length = ServerCodec(spec).encode_answer({"w": decoded.arrays["v"]}, decoded)
    returned = read_binary_answer(answer, answer_length)["w"]
    assert returned.dtype == values.dtype and returned.tobytes() == values.tobytes()


def test_numbers_are_read_in_place_and_text_elements_keep_their_bytes():
    body, length = encode_binary_request(GOOD)
    decoded = CODEC.decode(bytearray(body), length)  # TorchServe hands the worker a bytearray
    assert decoded.style == KSERVE_V2 and decoded.binary_outputs == {"y", "echo"}
    assert not decoded.arrays["x"].flags.owndata  # a view of the body, not a copy
    np.testing.assert_array_equal(decoded.arrays["x"], GOOD["x"])
    assert decoded.arrays["text"].tolist() == [[b"a"], ["\u00e9".encode()]]
    assert decoded.arrays["level"].tolist() == [[0], [255]]


def test_a_datatype_other_than_the_declared_is_converted_by_the_json_rules():
    body, length = encode_binary_request({**GOOD, "x": GOOD["x"].astype(np.float64), "level": np.array([[7]], dtype=np.int64)})
    decoded = CODEC.decode(body, length)
    assert decoded.arrays["x"].dtype == np.float32 and decoded.arrays["level"].dtype == np.uint8
    body, length = encode_binary_request({**GOOD, "level": np.array([[300]], dtype=np.int64)})
    assert "expects UINT8 integers from 0 to 255, got 300" in refusal(body, length).message
    body, length = encode_binary_request({**GOOD, "level": np.array([[1.5]], dtype=np.float32)})
    assert "input 'level' expects UINT8 integers" in refusal(body, length).message


def test_binary_and_json_entries_mix_in_one_body_and_answers_follow_what_was_asked():
    document = {"inputs": [
        {"name": "x", "shape": [1, 2], "datatype": "FP32", "parameters": {"binary_data_size": 8}},
        {"name": "text", "shape": [1, 1], "datatype": "BYTES", "data": ["hi"]},
        {"name": "level", "shape": [1, 1], "datatype": "UINT8", "data": [4]},
    ], "outputs": [{"name": "y", "parameters": {"binary_data": True}}, {"name": "echo"}]}
    body, length = body_of(document, np.array([1, 2], dtype="<f4").tobytes())
    decoded = CODEC.decode(body, length)
    assert decoded.arrays["x"].tolist() == [[1.0, 2.0]] and decoded.binary_outputs == {"y"}
    answer, answer_length = CODEC.encode_answer({"y": np.array([[5]]), "echo": np.array([[b"hi"]], dtype=object)}, decoded)
    header = json.loads(answer[:answer_length])
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 8} and header["outputs"][1]["data"] == ["hi"]
    outputs = read_binary_answer(answer, None)  # found without the header length, as over TorchServe's gRPC
    assert outputs["y"].tolist() == [[5]] and outputs["echo"].tolist() == [[b"hi"]]


def test_a_json_request_gets_a_json_answer():
    decoded = CODEC.decode(json.dumps({"inputs": [
        {"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]},
    ]}).encode())
    answer, answer_length = CODEC.encode_answer({"y": np.array([[1]]), "echo": np.array([[b"a"]], dtype=object)}, decoded)
    assert answer_length is None and json.loads(answer)["outputs"][0]["data"] == [1]


def test_answer_header_is_found_when_the_binary_part_holds_braces():
    data = np.frombuffer(b"}}{{" * 4, dtype=np.int32).reshape(4, 1)
    decoded = CODEC.decode(*encode_binary_request(GOOD))
    answer, _ = CODEC.encode_answer({"y": data.astype(np.int64), "echo": np.array([[b"}"]] * 4, dtype=object)}, decoded)
    document, rest = split_answer(answer, None)
    assert [entry["name"] for entry in document["outputs"]] == ["y", "echo"] and len(rest) == 32 + 4 * 5


@pytest.mark.parametrize("header_length, message", [
    ("abc", "Inference-Header-Content-Length is 'abc'"),
    ("0", "Inference-Header-Content-Length is '0'"),
    ("999999", "Inference-Header-Content-Length is '999999'"),
    ("0\x1f", "Inference-Header-Content-Length is '0\\x1f'"),
    ("\u00b2", "Inference-Header-Content-Length is '\u00b2'"),
])
def test_a_bad_header_length_is_refused_naming_the_header(header_length, message):
    body, _ = encode_binary_request(GOOD)
    assert message in refusal(body, header_length).message


def test_each_inconsistent_binary_body_is_refused_naming_the_input():
    x_entry = {"name": "x", "shape": [1, 2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}
    cases = [
        (body_of({"inputs": [{**x_entry, "parameters": {"binary_data_size": 4}}]}, bytes(4)),
         "input 'x': 4 bytes of FP32 data, but shape [1, 2] needs 8"),
        (body_of({"inputs": [x_entry]}, bytes(4)), "runs past the end of the body"),
        (body_of({"inputs": [x_entry]}, bytes(12)), "4 bytes follow the last input's binary data"),
        (body_of({"inputs": [{**x_entry, "datatype": None}]}, bytes(8)), 'input \'x\' is binary and needs "datatype"'),
        (body_of({"inputs": [{**x_entry, "data": [1, 2]}]}, bytes(8)), 'input \'x\' has both "data" and "binary_data_size"'),
        (body_of({"inputs": [{**x_entry, "parameters": {"binary_data_size": -1}}]}), '"binary_data_size" must be a byte count'),
        (body_of({"inputs": [{"name": "text", "shape": [1, 1], "datatype": "BYTES", "parameters": {"binary_data_size": 6}}]},
                 struct.pack("<I", 9) + b"ab"), "BYTES element 0 says 9 bytes, but only 2 follow"),
        (body_of({"inputs": [{"name": "text", "shape": [2, 1], "datatype": "BYTES", "parameters": {"binary_data_size": 9}}]},
                 struct.pack("<I", 5) + b"abcde"), "BYTES data ends after 1 of 2 elements"),
        (body_of({"inputs": [{"name": "text", "shape": [2, 1], "datatype": "BYTES", "parameters": {"binary_data_size": 5}}]},
                 struct.pack("<I", 1) + b"a"), ("input 'text': 5 bytes of BYTES data, but shape [2, 1] has 2 elements, "
                                                "which need at least 8 (a 4-byte length each)")),
        (body_of({"inputs": [{"name": "text", "shape": [1, 1], "datatype": "BYTES", "parameters": {"binary_data_size": 7}}]},
                 struct.pack("<I", 1) + b"abc"), "2 bytes left over after 1 BYTES elements"),
        (body_of({"inputs": "x"}), 'the JSON header of a binary request must be {"inputs"'),
        (body_of({"inputs": [x_entry, x_entry]}, bytes(16)), "input 'x' is given twice"),
    ]
    for (body, length), message in cases:
        assert message in refusal(body, length).message, message


def binary_entry(name: str, shape: list, datatype: str, size: int) -> dict:
    return {"name": name, "shape": shape, "datatype": datatype, "parameters": {"binary_data_size": size}}


HOSTILE_SHAPES = [
    # numpy's int64 product of these is 0 (or small): counted so, they passed for empty tensors and failed in reshape.
    pytest.param("x", [2**32, 2**32], "FP32", b"", "input 'x': 0 bytes of FP32 data, but shape [4294967296, 4294967296] "
                 "needs 73,786,976,294,838,206,464 (18,446,744,073,709,551,616 values of 4 bytes)", id="fp32-2**64"),
    pytest.param("x", [2**20, 2**20, 2**20, 2**4], "FP32", b"", "but shape [1048576, 1048576, 1048576, 16] needs",
                 id="fp32-rank-4"),
    pytest.param("x", [2**32 + 1, 2**32 - 1], "FP32", bytes(4), "input 'x': 4 bytes of FP32 data", id="fp32-2**64-1"),
    pytest.param("x", [2**39, 2**39, 0], "FP32", b"", "input 'x': \"shape\" [549755813888, 549755813888, 0] is too large "
                 "for an array", id="no-values-huge-extent"),
    pytest.param("x", [2305843009213693953, 4], "FP32", bytes(16), "input 'x': \"shape\" [2305843009213693953, 4] has a "
                 "dimension of 2,305,843,009,213,693,953", id="dimension-2**61+1"),
    pytest.param("x", [-1, 2], "FP32", bytes(8), "input 'x' needs \"shape\", a list of up to 32 non-negative integers",
                 id="negative"),
    pytest.param("x", [1.0, 2], "FP32", bytes(8), "input 'x' needs \"shape\"", id="float"),
    # BYTES elements were allocated (an object array of 2**39 pointers: 4 TiB) before the data was read.
    pytest.param("text", [2**39, 1], "BYTES", struct.pack("<I", 0), "input 'text': 4 bytes of BYTES data, but shape "
                 "[549755813888, 1] has 549,755,813,888 elements, which need at least 2,199,023,255,552", id="bytes-2**39"),
    pytest.param("text", [2**32, 2**32], "BYTES", b"", "has 18,446,744,073,709,551,616 elements", id="bytes-2**64"),
]


@pytest.mark.parametrize("name, shape, datatype, data, message", HOSTILE_SHAPES)
def test_a_shape_the_data_cannot_fill_is_refused_with_400_before_any_allocation(name, shape, datatype, data, message):
    failure = refusal(*body_of({"inputs": [binary_entry(name, shape, datatype, len(data))]}, data))
    assert failure.status == 400 and message in failure.message


@pytest.mark.parametrize("name, shape, datatype, data, message", HOSTILE_SHAPES)
def test_a_hostile_binary_answer_is_refused_by_the_client_too(name, shape, datatype, data, message):
    body, length = body_of({"outputs": [binary_entry(name, shape, datatype, len(data))]}, data)
    with pytest.raises(RequestFailure) as caught:
        read_binary_answer(body, length)
    assert message.replace("input", "output") in caught.value.message


def test_binary_entries_without_the_header_length_are_refused_with_what_to_send():
    body, _ = body_of({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}]})
    with pytest.raises(RequestFailure) as caught:
        CODEC.decode(body)
    assert "has no Inference-Header-Content-Length header" in caught.value.message


def test_limits_apply_to_binary_bodies_too():
    small = ServerCodec(SPEC, Limits(max_bytes_element=4))
    body, length = encode_binary_request({"text": np.array([[b"too long"]], dtype=object)})
    failure = refusal(body, length, small)
    assert failure.status == 413 and "element of 8 bytes, over the limit of 4" in failure.message
    deep = b'{"inputs":' + b"[" * 50 + b"]" * 50 + b"}"
    assert "JSON header nests 51 levels deep" in refusal(deep, len(deep)).message


def test_body_limit_fits_a_full_batch_and_never_falls_below_the_floor():
    def spec(shape, rows, **fields):
        return ModelSpec(name="s", entrypoint=ENTRYPOINT, inputs=[mfn.Tensor("x", "FP32", shape)],
                         outputs=[mfn.Tensor("y", "FP32", [1])], batching=mfn.Batching(max_batch_size=rows), **fields)

    assert body_limit(spec([3, 224, 224], 8)) == MAX_BODY_BYTES  # 4.8 MB a batch: the floor holds
    assert body_limit(spec([3, 1024, 1024], 8)) == 192 * MIB  # 2 x 8 rows x 12 MiB
    assert body_limit(spec([-1, 1024], 64)) == 2 * 64 * 1024 * 1024 * 4  # a variable dimension counts 1024
    assert body_limit(spec([3, 1024, 1024], 8, max_request_mb=500)) == 500 * MIB


def test_tensor_bytes_writes_little_endian_whatever_the_array():
    big_endian = np.array([1, 2], dtype=">i4")
    assert bytes(tensor_bytes(big_endian, "INT32")) == struct.pack("<ii", 1, 2)
    assert bytes(tensor_bytes(np.array([b"ab", "\u00e9"], dtype=object), "BYTES")) == struct.pack("<I", 2) + b"ab" + struct.pack("<I", 2) + "\u00e9".encode()


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300), st.one_of(st.none(), st.integers(-5, 400).map(str), st.text(max_size=5)))
def test_any_binary_body_decodes_or_is_refused_with_a_4xx(tail, header_length):
    header, _ = encode_binary_request(GOOD)
    for body in (tail, header[: len(header) // 2] + tail, header + tail):
        try:
            CODEC.decode(body, header_length if header_length is not None else str(len(body) // 2 or 1))
        except RequestFailure as failure:
            assert 400 <= failure.status < 500 and failure.message
