"""The shared batch loop, driven with plain dicts of arrays as both server adapters hand it."""

import numpy as np
import pytest

import mfn
from mfn.handlers.metrics import InMemoryMetrics
from mfn.runtime.loop import BatchLoop, RequestFailure
from mfn.runtime.metrics import LoopMetrics
from mfn.spec import Entrypoint, spec_from_handler


class Recorder(mfn.Handler):
    name = "recorder"
    inputs = [mfn.Tensor("x", "FP32", [-1])]
    outputs = [mfn.Tensor("sum", "FP32", [1])]
    batching = mfn.Batching(max_batch_size=4)

    def __init__(self):
        self.batch_rows = []

    def predict(self, inputs):
        x = inputs["x"]
        self.batch_rows.append(x.shape[0])
        if (x < 0).any():
            raise ValueError("negative input")
        return {"sum": x.sum(axis=1, keepdims=True)}


def make_loop(cls=Recorder, metrics=None):
    handler = cls()
    spec = spec_from_handler(cls, Entrypoint(file="t.py", attribute=cls.__name__))
    return handler, BatchLoop(handler, spec, LoopMetrics(metrics or InMemoryMetrics(), spec.name, spec.version))


def rows(*values, width=2):
    return {"x": np.array([[v] * width for v in values], dtype=np.float32)}


def test_requests_are_batched_into_one_predict_and_split_back_in_order():
    handler, loop = make_loop()
    outcomes = loop.run([rows(1), rows(2, 3), rows(4)])
    assert handler.batch_rows == [4]
    assert [o["sum"].ravel().tolist() for o in outcomes] == [[2.0], [4.0, 6.0], [8.0]]


def test_batches_never_exceed_max_batch_size():
    handler, loop = make_loop()
    outcomes = loop.run([rows(1, 1, 1), rows(2, 2), rows(3)])
    assert handler.batch_rows == [3, 3]
    assert [o["sum"].shape[0] for o in outcomes] == [3, 2, 1]


def test_requests_with_different_variable_dims_are_predicted_separately():
    handler, loop = make_loop()
    outcomes = loop.run([rows(1, width=2), rows(1, width=3), rows(2, width=2)])
    assert sorted(handler.batch_rows) == [1, 2]
    assert [o["sum"].ravel().tolist() for o in outcomes] == [[2.0], [3.0], [4.0]]


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({"x": np.ones((1, 2), np.float64)}, "'x' has dtype FP64 (float64), declared FP32"),
        ({"x": np.ones((2,), np.float32)}, "'x' has shape [2], declared [batch, -1]"),
        ({"y": np.ones((1, 2), np.float32)}, "unknown input(s) ['y']"),
        ({}, "missing input 'x'"),
        ({"x": np.ones((5, 2), np.float32)}, "batch of 5 rows: recorder takes 1 to 4 rows"),
        (ValueError("not JSON"), "malformed request: not JSON"),
    ],
)
def test_a_malformed_request_fails_alone(request_, message):
    handler, loop = make_loop()
    bad, good = loop.run([request_, rows(1)])
    assert isinstance(bad, RequestFailure) and bad.status == 400
    assert message in bad.message
    assert good["sum"].tolist() == [[2.0]]


def test_a_failing_request_fails_alone_and_its_neighbours_are_answered():
    metrics = InMemoryMetrics()
    handler, loop = make_loop(metrics=metrics)
    outcomes = loop.run([rows(1), rows(-1), rows(2), rows(3)])
    poisoned = outcomes[1]
    assert isinstance(poisoned, RequestFailure) and poisoned.status == 500
    assert poisoned.message == "predict failed: ValueError: negative input"
    assert [outcomes[i]["sum"].tolist() for i in (0, 2, 3)] == [[[2.0]], [[4.0]], [[6.0]]]
    # The failed batch of 4, its failing first half, that half's halves, then the clean second half.
    assert handler.batch_rows == [4, 2, 1, 1, 2]
    assert metrics.total("mfn_isolation_predicts_total", model="recorder") == 4
    assert metrics.total("mfn_requests_total", outcome="success") == 3
    assert metrics.total("mfn_requests_total", outcome="error") == 1


def test_every_request_of_a_batch_failing_gets_its_own_error():
    handler, loop = make_loop()
    outcomes = loop.run([rows(-1), rows(-2), rows(-3)])
    assert all(isinstance(o, RequestFailure) and "negative input" in o.message for o in outcomes)
    assert len(handler.batch_rows) == 1 + 2 * 3 - 2


def test_isolation_can_be_turned_off_for_handlers_with_side_effects():
    class Once(Recorder):
        batching = mfn.Batching(max_batch_size=4, isolate_failures=False)

    handler, loop = make_loop(Once)
    outcomes = loop.run([rows(1), rows(-1)])
    assert all(isinstance(o, RequestFailure) for o in outcomes)
    assert handler.batch_rows == [2]


def test_isolation_costs_nothing_while_predict_succeeds():
    metrics = InMemoryMetrics()
    handler, loop = make_loop(metrics=metrics)
    loop.run([rows(1), rows(2), rows(3)])
    assert handler.batch_rows == [3]
    assert metrics.total("mfn_isolation_predicts_total") == 0


def test_the_next_batch_is_served_after_a_failure():
    handler, loop = make_loop()
    loop.run([rows(-1)])
    (second,) = loop.run([rows(5)])
    assert second["sum"].tolist() == [[10.0]]


def test_outputs_that_break_the_declaration_are_explained_with_the_fix():
    class WrongDtype(Recorder):
        def predict(self, inputs):
            return {"sum": inputs["x"].sum(axis=1, keepdims=True).astype(np.float64)}

    _, loop = make_loop(WrongDtype)
    (failure,) = loop.run([rows(1)])
    assert "'sum' has dtype FP64 (float64), declared FP32" in failure.message
    assert failure.message.endswith("; cast with .astype(np.float32)")


def test_pre_and_postprocess_run_per_request():
    class Hooks(Recorder):
        def preprocess(self, request):
            return {"x": request["x"] * 10}

        def postprocess(self, response):
            return {"sum": response["sum"] + 1}

    handler, loop = make_loop(Hooks)
    outcomes = loop.run([rows(1), rows(2)])
    assert handler.batch_rows == [2]
    assert [o["sum"].tolist() for o in outcomes] == [[[21.0]], [[41.0]]]


def test_text_outputs_become_utf8_bytes():
    class Text(mfn.Handler):
        name = "text"
        inputs = [mfn.Tensor("x", "BYTES", [1])]
        outputs = [mfn.Tensor("y", "BYTES", [1])]

        def predict(self, inputs):
            return {"y": np.array([[v.decode().upper()] for v in inputs["x"][:, 0]])}

    _, loop = make_loop(Text)
    (outcome,) = loop.run([{"x": np.array([[b"abc"], ["d\u00e9f".encode()]], dtype=object)}])
    assert outcome["y"].tolist() == [[b"ABC"], ["D\u00c9F".encode()]]
    assert outcome["y"].dtype == object


class Positional(mfn.Handler):
    name = "positional"
    inputs = [mfn.Tensor("a", "FP32", [1]), mfn.Tensor("b", "FP32", [1])]
    outputs = [mfn.Tensor("a_minus_b", "FP32", [1])]

    def predict(self, inputs):
        first, second = inputs.values()  # what a handler calling a model positionally does
        return {"a_minus_b": first - second}


@pytest.mark.parametrize("count", [1, 3], ids=["one-request", "batched"])
def test_inputs_reach_the_handler_in_declared_order_whatever_the_client_sent(count):
    _, loop = make_loop(Positional)
    reversed_order = {"b": np.array([[1.0]], np.float32), "a": np.array([[10.0]], np.float32)}
    outcomes = loop.run([reversed_order] * count)
    assert [outcome["a_minus_b"].tolist() for outcome in outcomes] == [[[9.0]]] * count
