import json

import numpy as np
import pytest
from pydantic import ValidationError

import mfn
from mfn.errors import SpecError
from mfn.handlers.dtypes import canonical_dtype
from mfn.spec import Entrypoint, ModelSpec, json_schema, spec_from_handler
from tests.conftest import ROOT

ENTRY = Entrypoint(file="handler.py", attribute="H")


def make_handler(**attributes):
    base = {
        "name": "h",
        "inputs": [mfn.Tensor("x", "FP32", [4])],
        "outputs": [mfn.Tensor("y", "FP32", [4])],
        "predict": lambda self, inputs: inputs,
    }
    return type("H", (mfn.Handler,), {**base, **attributes})


def spec_error(**attributes) -> str:
    with pytest.raises(SpecError) as caught:
        spec_from_handler(make_handler(**attributes), ENTRY)
    return str(caught.value)


@pytest.mark.parametrize(
    ("given", "expected"),
    [("FP32", "FP32"), ("fp16", "FP16"), ("TYPE_STRING", "BYTES"), (np.float32, "FP32"), ("int64", "INT64"),
     (np.dtype("bool"), "BOOL"), (bytes, "BYTES"), (np.dtype("U5"), "BYTES"), ("uint8", "UINT8")],
)
def test_dtypes_accept_triton_and_numpy_names(given, expected):
    assert canonical_dtype(given) == expected


def test_unknown_dtype_names_the_field_and_the_choices():
    with pytest.raises(ValueError) as caught:
        mfn.Tensor("x", "REAL", [1])
    assert "unknown dtype 'REAL'" in str(caught.value)
    assert "FP32" in str(caught.value)


def test_unknown_dtype_in_override_is_reported_with_its_path():
    with pytest.raises(SpecError) as caught:
        spec_from_handler(make_handler(), ENTRY, inputs=[{"name": "x", "dtype": "float128x", "shape": [1]}])
    assert "H.inputs[0]: Tensor 'x' dtype: unknown dtype 'float128x'" in str(caught.value)


def test_preferred_batch_size_over_max_is_refused_with_a_fix():
    with pytest.raises(ValueError) as caught:
        mfn.Batching(max_batch_size=4, preferred_batch_sizes=[2, 8])
    assert "preferred_batch_sizes [8] exceed max_batch_size 4" in str(caught.value)
    assert "raise max_batch_size" in str(caught.value)


def test_duplicate_tensor_names_are_refused():
    message = spec_error(inputs=[mfn.Tensor("x", "FP32", [1]), mfn.Tensor("x", "INT32", [1])])
    assert "H.inputs: duplicate tensor names ['x']" in message


def test_two_gpu_groups_must_each_name_their_gpus():
    message = spec_error(instances=[mfn.Instances(kind="gpu", gpus=[0]), mfn.Instances(kind="gpu")])
    assert "H.instances: with more than one GPU group each group must list its gpus" in message


def test_gpus_on_a_cpu_group_are_refused():
    with pytest.raises(ValueError, match="only valid with kind='gpu'"):
        mfn.Instances(kind="cpu", gpus=[0])


def test_missing_declarations_are_named():
    cls = type("Nameless", (mfn.Handler,), {"predict": lambda self, inputs: inputs})
    with pytest.raises(SpecError, match="declare `name`"):
        spec_from_handler(cls, ENTRY)


def test_bad_model_name_and_warmup_over_batch_limit():
    assert "H.name" in spec_error(name="has space")
    message = spec_error(batching=mfn.Batching(max_batch_size=2), warmup=mfn.Warmup(batch_size=4))
    assert "H.warmup: batch_size 4 exceeds batching.max_batch_size 2" in message


def test_absolute_artifact_path_is_refused():
    assert "must be relative to the handler file" in spec_error(artifacts={"weights": "/etc/passwd"})


def test_partial_override_keeps_the_other_declared_settings():
    cls = make_handler(batching=mfn.Batching(max_batch_size=16, max_queue_delay_us=500, preferred_batch_sizes=[4]))
    spec = spec_from_handler(cls, ENTRY, batching={"max_batch_size": 32}, version=3)
    assert spec.batching.max_batch_size == 32
    assert spec.batching.max_queue_delay_us == 500
    assert spec.batching.preferred_batch_sizes == (4,)
    assert spec.version == 3


def test_version_policy_command_line_forms():
    assert mfn.VersionPolicy.parse("all").kind == "all"
    assert mfn.VersionPolicy.parse("latest:2").latest == 2
    assert mfn.VersionPolicy.parse("specific:1,3").versions == (1, 3)
    with pytest.raises(ValueError, match="use 'all'"):
        mfn.VersionPolicy.parse("newest")


def test_spec_json_round_trip_is_stable():
    spec = spec_from_handler(make_handler(warmup=mfn.Warmup(batch_size=2)), ENTRY)
    text = spec.to_json()
    assert ModelSpec.from_json(text) == spec
    assert ModelSpec.from_json(text).to_json() == text


def test_spec_is_frozen_and_forbids_unknown_fields():
    spec = spec_from_handler(make_handler(), ENTRY)
    with pytest.raises(ValidationError, match="frozen"):
        spec.name = "other"
    data = json.loads(spec.to_json())
    data["colour"] = "red"
    with pytest.raises(Exception, match="colour"):
        ModelSpec.model_validate(data)


def test_checked_in_json_schema_is_current():
    checked_in = (ROOT / "schema" / "modelspec.schema.json").read_text()
    assert checked_in == json_schema(), "schema/modelspec.schema.json is stale: run `make schema`"


def test_function_decorator_makes_a_handler_class():
    @mfn.function(name="double", inputs=[mfn.Tensor("x", "FP32", [1])], outputs=[mfn.Tensor("y", "FP32", [1])])
    def double(inputs):
        return {"y": inputs["x"] * 2}

    assert issubclass(double, mfn.Handler)
    assert double.name == "double"
    assert double().predict({"x": np.ones((2, 1), np.float32)})["y"].tolist() == [[2.0], [2.0]]
