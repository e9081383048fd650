"""What a handler's author reads when a declaration or predict's outputs are wrong: one line naming the handler,
the tensor or field, and the fix."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest

import mfn
from mfn.errors import SpecError
from mfn.handlers.base import Handler
from mfn.handlers.loading import import_handler_file, load_handler
from mfn.runtime.loop import RequestFailure, check_outputs
from mfn.spec import Entrypoint, declaration_warnings, spec_from_handler
from tests.conftest import EXAMPLES

HANDLERS = Path(__file__).resolve().parents[1] / "handlers"
ENTRY = Entrypoint(file="h.py", attribute="H")
X = [mfn.Tensor("x", "FP32", [4])]
Y = [mfn.Tensor("y", "FP32", [4])]


def handler(**attributes: object) -> type[Handler]:
    body = {"name": "h", "inputs": X, "outputs": Y, "predict": lambda self, inputs: {"y": inputs["x"]}, **attributes}
    return type("H", (mfn.Handler,), body)


def refusal(**attributes: object) -> str:
    with pytest.raises(SpecError) as caught:
        spec_from_handler(handler(**attributes), ENTRY)
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        pytest.param(("features", "FP32", 4), ["Tensor 'features' shape: 4 is not a shape; write (4,)",
                                               "dimensions of one row"], id="int-shape"),
        pytest.param(("x", "FP32", [None]), ["Tensor 'x' shape: [None]: use -1 for a dimension of any length"],
                     id="none-dim"),
        pytest.param(("x", "FP32", [3, None]), ["e.g. [3, -1]"], id="none-dim-fix"),
        pytest.param(("x", "FP32", "4"), ["Tensor 'x' shape: '4' is not a shape; write a tuple"], id="text-shape"),
        pytest.param(("x", "FP32", [4.0]), ["Tensor 'x' shape: [4.0]: each dimension is a whole number"],
                     id="float-dim"),
        pytest.param(("x", "FP32", [0]), ["Tensor 'x' shape: [0]: each dimension is positive, or -1"], id="zero-dim"),
        pytest.param(("x", "FP32"), ["Tensor 'x' shape: missing", "() for one value per row"], id="no-shape"),
        pytest.param(("x", "float", [4]), ["Tensor 'x' dtype: dtype 'float' is ambiguous: write 'FP32'", "or 'FP64'"],
                     id="float-text"),
        pytest.param(("x", float, [4]), ["dtype float (Python's float) is ambiguous: write 'FP32'"], id="float-type"),
        pytest.param(("x", "int", [4]), ["dtype 'int' is ambiguous: write 'INT64' or 'INT32'"], id="int-text"),
        pytest.param(("x", "FP23", [4]), ["Tensor 'x' dtype: unknown dtype 'FP23': did you mean 'FP32'?"],
                     id="misspelt-dtype"),
        pytest.param(("my-x", "FP32", [4]), ["Tensor 'my-x' name: use letters, digits, '_' and '.'"], id="name"),
    ],
)
def test_a_bad_tensor_names_the_tensor_the_field_and_the_fix(args, fragments):
    with pytest.raises(ValueError) as caught:
        mfn.Tensor(*args)
    for fragment in fragments:
        assert fragment in str(caught.value)
    assert "Input should be" not in str(caught.value)


@pytest.mark.parametrize(("given", "expected"), [("double", "FP64"), (np.float32, "FP32"), (np.dtype("float64"), "FP64"),
                                                 ("float32", "FP32"), (np.dtype(int), "INT64")])
def test_unambiguous_dtypes_are_still_read(given, expected):
    assert mfn.Tensor("x", given, [1]).dtype == expected


def test_a_bad_tensor_in_a_handler_file_is_reported_at_its_line(tmp_path):
    path = tmp_path / "h.py"
    path.write_text("import mfn\n\nclass MLP(mfn.Handler):\n    name = 'mlp'\n"
                    "    inputs = [mfn.Tensor('features', 'FP32', 4)]\n")
    with pytest.raises(SpecError) as caught:
        import_handler_file(path)
    assert str(caught.value) == ("h.py, line 5, MLP.inputs: Tensor 'features' shape: 4 is not a shape; write (4,): "
                                 "shapes list the dimensions of one row, without the batch dimension")


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        pytest.param({"max_batch_size": 64}, "H: `max_batch_size` is not a declaration; write "
                     "`batching = mfn.Batching(max_batch_size=64)`", id="batching-field"),
        pytest.param({"max_queue_delay_us": 500}, "write `batching = mfn.Batching(max_queue_delay_us=500)`",
                     id="delay-field"),
        pytest.param({"gpus": [0, 1]}, "write `instances = [mfn.Instances(kind='gpu', gpus=[0, 1])]`", id="gpus"),
        pytest.param({"batchng": mfn.Batching(max_batch_size=64)}, "`batchng` is not a declaration; did you mean "
                     "`batching`?", id="misspelt-batching"),
        pytest.param({"input": X}, "`input` is not a declaration; did you mean `inputs`?", id="misspelt-inputs"),
        pytest.param({"requirement": ["torch"]}, "did you mean `requirements`?", id="misspelt-requirements"),
        pytest.param({"deterministc": False}, "did you mean `deterministic`?", id="misspelt-deterministic"),
        pytest.param({"batch_config": mfn.Batching()}, "`batch_config` holds mfn.Batching under a name mfn does not "
                     "read; name it `batching`", id="declaration-object-elsewhere"),
    ],
)
def test_an_attribute_that_looks_like_a_declaration_is_refused_with_the_one_meant(attributes, expected):
    assert expected in refusal(**attributes)


def test_a_misdeclared_attribute_of_a_base_class_is_found_too():
    base = type("Base", (mfn.Handler,), {"max_batch_size": 64})
    cls = type("H", (base,), {"name": "h", "inputs": X, "outputs": Y, "predict": lambda self, inputs: inputs})
    with pytest.raises(SpecError, match="`max_batch_size` is not a declaration"):
        spec_from_handler(cls, ENTRY)


class _OwnState(mfn.Handler):
    """Class-level state and methods of a handler's own that are no declarations."""

    name = "own_state"
    inputs = X
    outputs = Y
    batching = mfn.Batching(max_batch_size=64)
    labels = ["cat", "dog"]
    cached = {}  # close to `cache`, but not a value `cache` takes
    count = 0
    versions = [1, 2]  # close to `version`, but not an int
    _max_batch_size = 16
    _inputs = X

    @property
    def input_names(self):
        return [tensor.name for tensor in self.inputs]

    @staticmethod
    def batching_rule(rows):
        return rows

    def predict(self, inputs):
        return {"y": inputs["x"]}


def test_a_handlers_own_state_and_methods_are_not_taken_for_declarations():
    assert spec_from_handler(_OwnState, ENTRY).batching.max_batch_size == 64


def _good_handlers() -> list[type[Handler]]:
    broken = {"bad_declaration.py", "import_error.py"}
    files = [path for path in sorted(HANDLERS.glob("*.py")) if path.name not in broken | {"__init__.py"}]
    files += sorted(EXAMPLES.glob("*/handler.py")) + sorted(EXAMPLES.glob("*/*stats*.py"))
    found = {}
    for path in files:
        module = import_handler_file(path)
        for value in vars(module).values():
            if inspect.isclass(value) and issubclass(value, Handler) and value.__module__ == module.__name__ \
                    and hasattr(value, "name") and value.predict is not Handler.predict:
                found[f"{path.name}:{value.__name__}"] = value
    return list(found.values())


def test_the_handlers_in_examples_and_tests_are_still_accepted():
    handlers = _good_handlers()
    assert len(handlers) > 20
    refused = {}
    for cls in handlers:
        try:
            spec_from_handler(cls, ENTRY)
        except SpecError as error:
            refused[cls.__qualname__] = str(error)
    # bad_outputs.py holds two handlers whose specs are wrong on purpose (a model name, GPU groups).
    assert set(refused) == {"BadName", "BadSpec"}, refused


def test_a_misspelt_keyword_of_function_is_refused_with_the_one_meant():
    with pytest.raises(SpecError) as caught:
        mfn.function(name="f", inputs=X, outputs=Y, batchng=mfn.Batching(max_batch_size=64))
    assert str(caught.value) == "@mfn.function(name='f'): `batchng` is not a declaration; did you mean `batching`?"


def test_an_unknown_keyword_of_function_lists_the_declarations():
    with pytest.raises(SpecError) as caught:
        mfn.function(name="f", inputs=X, outputs=Y, colour="blue")
    assert "`colour` is not a declaration; declarations are name, version, inputs, outputs, batching" in str(caught.value)


def test_a_misspelt_function_keyword_in_a_handler_file_is_reported_at_its_line(tmp_path):
    path = tmp_path / "f.py"
    path.write_text("import mfn\n\n\n@mfn.function(name='f', inputs=[mfn.Tensor('x', 'FP32', [1])],\n"
                    "              outputs=[mfn.Tensor('y', 'FP32', [1])], max_batch_size=64)\n"
                    "def f(inputs):\n    return {'y': inputs['x']}\n")
    with pytest.raises(SpecError) as caught:
        load_handler(f"{path}:f")
    assert str(caught.value).startswith("f.py, line 4: @mfn.function(name='f'): `max_batch_size` is not a declaration; "
                                        "write `batching = mfn.Batching(max_batch_size=64)`")


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        pytest.param({"inputs": X[0]}, "H.inputs: write a list, [mfn.Tensor(...)], not a single Tensor", id="lone-tensor"),
        pytest.param({"inputs": [("x", "FP32", [4])]}, "H.inputs: item 0 is ('x', 'FP32', [4]); write mfn.Tensor(...)",
                     id="tuple-tensor"),
        pytest.param({"instances": mfn.Instances(count=2)}, "H.instances: write a list, [mfn.Instances(...)], not a "
                     "single Instances", id="lone-instances"),
        pytest.param({"batching": 64}, "H.batching: 64 is not an mfn.Batching; write batching = "
                     "mfn.Batching(max_batch_size=64)", id="int-batching"),
        pytest.param({"warmup": True}, "H.warmup: True is not an mfn.Warmup; write warmup = mfn.Warmup(...)",
                     id="bool-warmup"),
    ],
)
def test_a_declaration_of_the_wrong_kind_says_what_to_write(attributes, expected):
    assert refusal(**attributes) == expected


@pytest.mark.parametrize(("shape", "warned"), [((-1, 4), True), ((-1, -1), True), ((-1,), False), ((4, -1), False),
                                               ((4,), False)])
def test_a_leading_variable_dimension_is_questioned_not_refused(shape, warned):
    spec = spec_from_handler(handler(outputs=[mfn.Tensor("y", "FP32", shape)]), ENTRY)
    warnings = declaration_warnings(spec)
    assert bool(warnings) == warned
    if warned:
        assert f"outputs Tensor 'y' shape {list(shape)}: shapes are per row, without the batch dimension; if the " \
               f"leading -1 is the batch, declare {shape[1:]}" == warnings[0]


OUTPUTS_SPEC = spec_from_handler(handler(outputs=[mfn.Tensor("y", "FP32", [2]), mfn.Tensor("n", "INT64", [1]),
                                                  mfn.Tensor("t", "BYTES", [1])]), ENTRY)
GOOD = {"y": np.zeros((2, 2), np.float32), "n": np.zeros((2, 1), np.int64), "t": np.array([[b"a"], [b"b"]], dtype=object)}


@pytest.mark.parametrize(
    ("outputs", "expected"),
    [
        pytest.param({**GOOD, "y": np.zeros((2, 2))}, "predict output 'y' has dtype FP64 (float64), declared FP32; "
                     "cast with .astype(np.float32)", id="float64"),
        pytest.param({**GOOD, "n": np.zeros((2, 1), np.int32)}, "predict output 'n' has dtype INT32 (int32), declared "
                     "INT64; cast with .astype(np.int64)", id="int32"),
        pytest.param({**GOOD, "t": np.zeros((2, 1), np.float32)}, "predict output 't' has dtype FP32 (float32), declared "
                     "BYTES; return bytes or str values in an object array, e.g. np.array(values, dtype=object)",
                     id="bytes"),
        pytest.param({**GOOD, "n": [[1.5], [2.0]]}, "predict output 'n' is a list whose values INT64 cannot hold "
                     "exactly (read as float64); return values that fit, as np.asarray(values, dtype=np.int64)",
                     id="float-list-for-int"),
        pytest.param({**GOOD, "extra": np.zeros(2)}, "predict returned 'extra', which is not declared; declared "
                     "outputs: 'y', 'n', 't'", id="extra"),
        pytest.param({"y": GOOD["y"], "n": GOOD["n"]}, "predict did not return 't'; declared outputs: 'y', 'n', 't'",
                     id="missing"),
        pytest.param({"y": GOOD["y"], "n": GOOD["n"], "z": 1}, "predict returned 'z', which is not declared; predict "
                     "did not return 't'; declared outputs: 'y', 'n', 't'", id="extra-and-missing"),
        pytest.param({**GOOD, "y": np.zeros((2, 3), np.float32)}, "predict output 'y' has shape [2, 3], declared "
                     "[batch, 2]; return one row per input row, each of shape (2,)", id="shape"),
        pytest.param({**GOOD, "y": np.zeros((1, 2), np.float32)}, "predict output 'y' has 1 rows for 2 input rows; "
                     "return one row per input row", id="rows"),
        pytest.param([GOOD["y"]], "predict returned list, not a dict: return {name: array} with the declared outputs "
                     "'y', 'n', 't', each with one row per input row", id="not-a-dict"),
    ],
)
def test_outputs_that_break_the_declaration_name_the_output_and_the_fix(outputs, expected):
    with pytest.raises(RequestFailure) as caught:
        check_outputs(outputs, OUTPUTS_SPEC, rows=2)
    assert caught.value.message == expected
    assert caught.value.status == 500


def test_lists_are_read_as_the_declared_dtype_where_their_values_fit():
    checked = check_outputs({"y": [[0.5, 1.0], [2.0, 3.0]], "n": [[1], [2]], "t": [["a"], ["b"]]}, OUTPUTS_SPEC, rows=2)
    assert checked["y"].dtype == np.float32 and checked["n"].dtype == np.int64
    assert checked["t"].tolist() == [[b"a"], [b"b"]]


@pytest.mark.parametrize("text", ["newest", "latest:x", "latest:0", "specific:", "specific:1,,2", "all:2"])
def test_a_bad_version_policy_is_a_value_error_naming_the_forms(text):
    with pytest.raises(ValueError, match=r"use 'all', 'latest\[:N\]' or 'specific:1,2'"):
        mfn.VersionPolicy.parse(text)
