"""The streaming batch loop in-process: chunks split per request, the done mask, postprocess per chunk, failures,
cancellation between chunks, and packaging's check of a streaming handler."""

import numpy as np
import pytest

import mfn
from mfn.errors import HandlerError
from mfn.handlers.metrics import InMemoryMetrics
from mfn.packaging import build_spec
from mfn.runtime.bundle import load_in_process
from mfn.runtime.loop import RequestFailure
from mfn.runtime.metrics import LoopMetrics
from mfn.runtime.streaming import CANCELLED_STATUS, stream
from tests.conftest import HANDLERS

STREAMER = f"{HANDLERS / 'streamer.py'}:Streamer"


def request(steps: int, rows: int = 1) -> dict:
    return {"steps": np.full((rows, 1), steps, np.int32), "delay_ms": np.zeros((rows, 1), np.int32)}


@pytest.fixture
def loaded(tmp_path, monkeypatch):
    monkeypatch.setenv("MFN_TEST_STREAM_LOG", str(tmp_path / "log"))
    cls, handler_file, spec = build_spec(STREAMER)
    model = load_in_process(cls, spec, handler_file)
    metrics = InMemoryMetrics()
    model.loop.metrics = LoopMetrics(metrics, spec.name, spec.version, streaming=True)
    yield model, metrics, tmp_path / "log"
    model.close()


def test_the_spec_records_a_generator_predict_as_streaming_and_triton_gets_a_decoupled_model():
    from mfn.model_repository.render import config_dict

    spec = build_spec(STREAMER)[2]
    assert spec.streaming
    assert config_dict(spec)["model_transaction_policy"] == {"decoupled": True}
    assert not build_spec(f"{HANDLERS / 'versioned.py'}:Versioned")[2].streaming


def test_each_request_gets_its_rows_of_each_chunk_and_ends_with_its_done_mask(loaded):
    model, metrics, _ = loaded
    steps = list(stream(model.loop, [request(2), request(4, rows=2)]))
    by_request = {0: [], 1: []}
    for step in steps:
        for event in step:
            by_request[event.index].append(event)
    assert [event.outcome["step"].ravel().tolist() for event in by_request[0]] == [[1], [2]]
    assert [event.last for event in by_request[0]] == [False, True]
    assert [event.outcome["batch"].ravel().tolist() for event in by_request[1]][0] == [3, 3]  # one batch of 3 rows
    assert [event.outcome["step"].ravel().tolist() for event in by_request[1]] == [[1, 1], [2, 2], [3, 3], [4, 4]]
    assert by_request[1][-1].last
    assert metrics.total("mfn_requests_total", outcome="success") == 2
    assert metrics.total("mfn_stream_chunks") == 6  # chunks per request, summed: 2 + 4


def test_cancelled_requests_stop_between_chunks_and_the_generator_is_closed_when_none_is_left(loaded):
    model, metrics, log = loaded
    seen = []
    events = [event for step in stream(model.loop, [request(50)], cancelled=lambda index: len(seen) >= 2)
              for event in step if not seen.append(event)]
    assert isinstance(events[-1].outcome, RequestFailure) and events[-1].outcome.status == CANCELLED_STATUS
    assert log.read_text().splitlines() == ["step 1", "step 2", "step 3", "closed"]
    assert metrics.total("mfn_requests_total", outcome="cancelled") == 1


def test_a_failure_in_the_middle_of_a_stream_ends_every_request_of_the_batch_with_the_reason(loaded):
    model, _, _ = loaded

    def failing(inputs):
        yield {"step": np.ones((2, 1), np.int32), "batch": np.ones((2, 1), np.int32)}
        raise ValueError("ran out of tokens")

    model.loop.handler.predict = failing
    events = [event for step in stream(model.loop, [request(3), request(3)]) for event in step]
    assert [event.last for event in events] == [False, False, True, True]
    assert all("predict failed: ValueError: ran out of tokens" in event.outcome.message for event in events[2:])


def test_packaging_checks_every_chunk_against_the_declared_outputs(tmp_path):
    handler = tmp_path / "bad_stream.py"
    handler.write_text(
        "import numpy as np\nimport mfn\n\n"
        "class BadStream(mfn.Handler):\n"
        "    name = 'bad_stream'\n"
        "    inputs = [mfn.Tensor('x', 'FP32', [2])]\n"
        "    outputs = [mfn.Tensor('y', 'FP32', [2])]\n\n"
        "    def predict(self, inputs):\n"
        "        yield {'y': inputs['x']}\n"
        "        yield {'y': inputs['x'][:, :1]}\n"
    )
    with pytest.raises(HandlerError, match=r"bad_stream: on a sample batch of \d+ rows, predict output 'y' has shape \[2, 1\]"):
        mfn.package(f"{handler}:BadStream", tmp_path / "out")
    assert not (tmp_path / "out").exists()
