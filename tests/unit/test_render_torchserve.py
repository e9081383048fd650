"""model-config.yaml golden files, parsed back as YAML and checked field by field."""

import pytest
import yaml

import mfn
from mfn.archiver.render import render_model_config
from mfn.spec import Entrypoint, ModelSpec
from tests.conftest import GOLDEN, assert_matches_golden

ENTRY = Entrypoint(file="handler.py", attribute="H")
X = [mfn.Tensor("x", "FP32", [4])]

CASES = {
    "cpu": ModelSpec(
        name="classifier", inputs=X, outputs=X, entrypoint=ENTRY, instances=[mfn.Instances(kind="cpu", count=2)],
        batching=mfn.Batching(max_batch_size=32, max_queue_delay_us=2000, preferred_batch_sizes=[8, 16]),
    ),
    "gpu_groups": ModelSpec(
        name="classifier", inputs=X, outputs=X, entrypoint=ENTRY,
        instances=[mfn.Instances(kind="gpu", count=2, gpus=[0, 1]), mfn.Instances(kind="gpu", count=1, gpus=[3])],
        batching=mfn.Batching(max_batch_size=8, max_queue_delay_us=1500),
    ),
    "no_dynamic_batching": ModelSpec(
        name="classifier", inputs=X, outputs=X, entrypoint=ENTRY, instances=[mfn.Instances(kind="auto", count=3)],
        batching=mfn.Batching(max_batch_size=4, dynamic=False),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_model_config_matches_golden_and_parses_back_to_the_spec(case):
    spec = CASES[case]
    text = render_model_config(spec)
    assert_matches_golden(text, GOLDEN / "torchserve" / f"{case}.model-config.yaml")
    config = yaml.safe_load(text)
    assert config["minWorkers"] == config["maxWorkers"] == spec.worker_count
    assert config["batchSize"] == (spec.batching.max_batch_size if spec.batching.dynamic else 1)  # no server-side batching


def test_batching_and_workers_come_from_the_spec():
    config = yaml.safe_load(render_model_config(CASES["cpu"]))
    assert config == {
        "minWorkers": 2, "maxWorkers": 2, "batchSize": 32, "maxBatchDelay": 2, "responseTimeout": 120, "deviceType": "cpu",
    }


def test_gpu_groups_give_device_ids_and_one_worker_per_gpu_and_count():
    config = yaml.safe_load(render_model_config(CASES["gpu_groups"]))
    assert config["deviceType"] == "gpu"
    assert config["deviceIds"] == [0, 1, 3]
    assert config["minWorkers"] == config["maxWorkers"] == 5
    assert config["maxBatchDelay"] == 2  # 1.5 ms rounds up: TorchServe counts whole milliseconds


def test_without_dynamic_batching_each_request_runs_alone():
    config = yaml.safe_load(render_model_config(CASES["no_dynamic_batching"]))
    assert (config["batchSize"], config["maxBatchDelay"]) == (1, 1)
    assert "deviceType" not in config  # 'auto' leaves the choice to TorchServe
