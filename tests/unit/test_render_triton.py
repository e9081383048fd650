"""config.pbtxt golden files, each parsed back through Triton's own model_config_pb2."""

import pytest
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

import mfn
from mfn.handlers.samples import VARIABLE_DIM_SAMPLE
from mfn.model_repository.render import model_warmup, render_config
from mfn.spec import Entrypoint, ModelSpec
from tests.conftest import GOLDEN, assert_matches_golden

ENTRY = Entrypoint(file="handler.py", attribute="H")
FEATURES = mfn.Tensor("features", "FP32", [4])
PROBS = mfn.Tensor("probs", "FP32", [3])

CASES = {
    "cpu": ModelSpec(
        name="classifier", inputs=[FEATURES], outputs=[PROBS, mfn.Tensor("label", "INT64", [1])], entrypoint=ENTRY,
        batching=mfn.Batching(max_batch_size=32, max_queue_delay_us=2000, preferred_batch_sizes=[8, 16]),
        instances=[mfn.Instances(kind="cpu", count=2)],
    ),
    "gpu_ids": ModelSpec(
        name="classifier", inputs=[FEATURES], outputs=[PROBS], entrypoint=ENTRY,
        instances=[mfn.Instances(kind="gpu", count=2, gpus=[0, 1])],
    ),
    "two_groups": ModelSpec(
        name="classifier", inputs=[FEATURES], outputs=[PROBS], entrypoint=ENTRY,
        instances=[mfn.Instances(kind="gpu", count=1, gpus=[0]), mfn.Instances(kind="gpu", count=2, gpus=[1]), mfn.Instances(kind="cpu")],
    ),
    "auto_no_dynamic": ModelSpec(
        name="classifier", inputs=[FEATURES], outputs=[PROBS], entrypoint=ENTRY,
        batching=mfn.Batching(max_batch_size=4, dynamic=False), instances=[mfn.Instances(kind="auto")],
    ),
    "warmup": ModelSpec(
        name="embedder", inputs=[mfn.Tensor("tokens", "INT64", [-1]), mfn.Tensor("text", "BYTES", [1])],
        outputs=[mfn.Tensor("vector", "FP16", [8])], entrypoint=ENTRY, warmup=mfn.Warmup(batch_size=4, count=2),
    ),
    "version_policy": ModelSpec(
        name="versioned", version=2, inputs=[FEATURES], outputs=[PROBS], entrypoint=ENTRY,
        version_policy=mfn.VersionPolicy(kind="specific", versions=[1, 2]),
    ),
    "variable_dims_bytes": ModelSpec(
        name="tokenizer", inputs=[mfn.Tensor("text", "BYTES", [-1]), mfn.Tensor("mask", "BOOL", [-1, -1])],
        outputs=[mfn.Tensor("ids", "INT32", [-1, 16]), mfn.Tensor("pieces", "BYTES", [-1])], entrypoint=ENTRY,
    ),
    "queue_policy_env": ModelSpec(
        name="guarded", inputs=[FEATURES], outputs=[PROBS], entrypoint=ENTRY,
        batching=mfn.Batching(
            max_batch_size=8, max_queue_delay_us=100, preserve_ordering=True,
            queue_policy=mfn.QueuePolicy(max_queue_size=64, timeout_us=50000, timeout_action="delay", allow_timeout_override=True),
        ),
        execution_env="$$TRITON_MODEL_DIRECTORY/env.tar.gz", parameters={"team": "search"},
        version_policy=mfn.VersionPolicy(kind="latest", latest=2),
    ),
    "scalar_per_row": ModelSpec(
        name="ranker", inputs=[mfn.Tensor("user_id", "INT64", []), FEATURES], outputs=[mfn.Tensor("score", "FP32", [])],
        entrypoint=ENTRY, warmup=mfn.Warmup(batch_size=2, count=1),
    ),
    "local_cache": ModelSpec(
        name="cached", inputs=[FEATURES], outputs=[PROBS], entrypoint=ENTRY, cache=mfn.Cache(kind="local", size_mb=32),
    ),
    # Triton's cache keys answers without the shape: a variable dim caches in mfn's adapter, Triton's stays off.
    "local_cache_variable_dims": ModelSpec(
        name="cached", inputs=[mfn.Tensor("tokens", "INT64", [-1])], outputs=[PROBS], entrypoint=ENTRY,
        cache=mfn.Cache(kind="local", size_mb=32),
    ),
    # Nor by the requested outputs: with two, one client's partial answer would be reused for all.
    "local_cache_two_outputs": ModelSpec(
        name="cached", inputs=[FEATURES], outputs=[PROBS, mfn.Tensor("label", "INT64", [1])], entrypoint=ENTRY,
        cache=mfn.Cache(kind="local", size_mb=32),
    ),
    # Redis caches run in mfn's adapter: Triton's own cache stays off.
    "redis_cache": ModelSpec(
        name="cached", inputs=[FEATURES], outputs=[PROBS], entrypoint=ENTRY,
        cache=mfn.Cache(kind="redis", url="redis://cache:6379/0", ttl_s=60),
    ),
}


def parse(text: str) -> model_config_pb2.ModelConfig:
    return text_format.Parse(text, model_config_pb2.ModelConfig())


@pytest.mark.parametrize("case", sorted(CASES))
def test_config_matches_golden_and_parses_back(case):
    text = render_config(CASES[case])
    assert_matches_golden(text, GOLDEN / "triton" / f"{case}.pbtxt")
    config = parse(text)
    spec = CASES[case]
    assert config.name == spec.name
    assert config.backend == "python"
    assert config.max_batch_size == spec.batching.max_batch_size
    assert [tensor.name for tensor in config.input] == [tensor.name for tensor in spec.inputs]
    assert [list(tensor.dims) for tensor in config.output] == [list(tensor.shape) or [1] for tensor in spec.outputs]
    assert len(config.instance_group) == len(spec.instances)


def test_instance_groups_keep_kind_count_and_gpu_ids():
    groups = parse(render_config(CASES["two_groups"])).instance_group
    kinds = model_config_pb2.ModelInstanceGroup.Kind
    assert [(kinds.Name(g.kind), g.count, list(g.gpus)) for g in groups] == [
        ("KIND_GPU", 1, [0]), ("KIND_GPU", 2, [1]), ("KIND_CPU", 1, []),
    ]


def test_dynamic_batching_and_queue_policy_fields():
    config = parse(render_config(CASES["queue_policy_env"]))
    batching = config.dynamic_batching
    assert batching.max_queue_delay_microseconds == 100
    assert batching.preserve_ordering
    policy = batching.default_queue_policy
    assert (policy.max_queue_size, policy.default_timeout_microseconds, policy.allow_timeout_override) == (64, 50000, True)
    assert model_config_pb2.ModelQueuePolicy.TimeoutAction.Name(policy.timeout_action) == "DELAY"
    assert config.parameters["EXECUTION_ENV_PATH"].string_value == "$$TRITON_MODEL_DIRECTORY/env.tar.gz"
    assert config.version_policy.latest.num_versions == 2


def test_no_dynamic_batching_block_when_dynamic_is_off():
    assert not parse(render_config(CASES["auto_no_dynamic"])).HasField("dynamic_batching")


def test_warmup_is_left_to_the_adapter_not_tritons_model_warmup():
    # The adapter warms up with mfn's sample rows before initialize() returns, outside mfn's metrics.
    assert not parse(render_config(CASES["warmup"])).model_warmup


def test_native_models_get_tritons_warmup_with_concrete_dims_and_a_data_source_per_input():
    spec = CASES["warmup"]
    config = json_format.ParseDict({"model_warmup": [model_warmup(spec.warmup, spec.inputs)]}, model_config_pb2.ModelConfig())
    (warmup,) = config.model_warmup
    assert (warmup.batch_size, warmup.count) == (4, 2)
    # A variable dimension gets the length every mfn sample gives it.
    assert list(warmup.inputs["tokens"].dims) == [VARIABLE_DIM_SAMPLE]
    assert warmup.inputs["tokens"].random_data
    assert warmup.inputs["text"].zero_data
    assert model_config_pb2.DataType.Name(warmup.inputs["text"].data_type) == "TYPE_STRING"

def test_a_scalar_per_row_is_exposed_as_one_element_and_reshaped_for_the_model():
    config = parse(render_config(CASES["scalar_per_row"]))
    user_id, features = config.input
    assert (list(user_id.dims), user_id.HasField("reshape"), list(user_id.reshape.shape)) == ([1], True, [])
    assert (list(features.dims), features.HasField("reshape")) == ([4], False)
    assert (list(config.output[0].dims), config.output[0].HasField("reshape")) == ([1], True)
    assert list(model_warmup(CASES["scalar_per_row"].warmup, CASES["scalar_per_row"].inputs)["inputs"]["user_id"]["dims"]) == [1]


def test_version_policy_specific():
    assert list(parse(render_config(CASES["version_policy"])).version_policy.specific.versions) == [1, 2]


def test_tritons_response_cache_only_for_fixed_shapes_and_one_output_and_the_server_is_sized_for_them():
    from mfn.model_repository.render import response_cache_bytes
    from mfn.servers.triton import launch as triton

    assert parse(render_config(CASES["local_cache"])).response_cache.enable
    assert not parse(render_config(CASES["redis_cache"])).HasField("response_cache")
    assert not parse(render_config(CASES["local_cache_variable_dims"])).HasField("response_cache")
    assert not parse(render_config(CASES["local_cache_two_outputs"])).HasField("response_cache")
    assert response_cache_bytes([CASES["local_cache_variable_dims"]]) == 0
    other = CASES["local_cache"].model_copy(update={"name": "other", "cache": mfn.Cache(size_mb=8)})
    newer = CASES["local_cache"].model_copy(update={"version": 2, "cache": mfn.Cache(size_mb=48)})
    assert response_cache_bytes([CASES["local_cache"], newer, other, CASES["cpu"]]) == (48 + 8) << 20
    assert response_cache_bytes([CASES["redis_cache"], CASES["cpu"]]) == 0
    ports = triton.Ports(http=1, grpc=2, metrics=3)
    assert "--cache-config=local,size=1024" in triton.server_args("/m", ports, [], "mfn_", response_cache_bytes=1024)
    assert not [arg for arg in triton.server_args("/m", ports, [], "mfn_") if arg.startswith("--cache-config")]
