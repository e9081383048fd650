"""How the server's log shows a handler's exception: from the handler's own frames on, once, with its last line."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

import mfn
from mfn.handlers.base import Context
from mfn.runtime.failures import handler_traceback, log_failure
from mfn.runtime.loop import BatchLoop
from mfn.spec import Entrypoint, spec_from_handler


class Poisoned(mfn.Handler):
    name = "poisoned"
    inputs = [mfn.Tensor("x", "FP32", [2])]
    outputs = [mfn.Tensor("y", "FP32", [2])]
    batching = mfn.Batching(max_batch_size=4)

    def predict(self, inputs):
        if (inputs["x"] < 0).any():
            raise ValueError("negative input")
        return {"y": inputs["x"]}


def failed_log(caplog, requests):
    spec = spec_from_handler(Poisoned, Entrypoint(file="t.py", attribute="Poisoned"))
    outcomes = BatchLoop(Poisoned(), spec).run(requests)
    with caplog.at_level(logging.ERROR, logger="mfn.test"):
        for index, outcome in enumerate(outcomes):
            if not isinstance(outcome, dict):
                log_failure(logging.getLogger("mfn.test"), spec, f"r{index}", outcome)
    return "\n".join(record.getMessage() for record in caplog.records)


def row(value):
    return {"x": np.full((1, 2), value, dtype=np.float32)}


def test_a_failure_isolated_from_a_batch_is_logged_once_from_the_handlers_frame(caplog):
    text = failed_log(caplog, [row(1.0), row(-1.0), row(2.0)])
    assert text.count("Traceback (most recent call last)") == 1, text
    assert text.count("ValueError: negative input") == 2, text  # the reason the client got, and the last line
    assert "in predict" in text and "raise ValueError" in text
    assert "mfn/runtime" not in text and "RequestFailure" not in text and "direct cause" not in text
    assert "During handling" not in text


def test_a_lone_failing_request_is_logged_the_same_way(caplog):
    text = failed_log(caplog, [row(-1.0)])
    assert text.count("Traceback (most recent call last)") == 1 and "mfn/runtime" not in text, text


def _raise_chained():
    try:
        {}["weights"]
    except KeyError as error:
        raise RuntimeError("weights are missing") from error


def test_the_handlers_own_chain_stays():
    try:
        _raise_chained()
    except RuntimeError as error:
        text = handler_traceback(error)
    assert text.index("KeyError: 'weights'") < text.index("direct cause") < text.index("RuntimeError: weights are missing")
    assert text.endswith("RuntimeError: weights are missing")


def test_mfn_frames_the_handler_called_into_stay():
    """A handler that asks mfn for something undeclared: mfn's frame is where the answer came from."""
    ctx = Context(model_dir=Path("."), version=1)
    try:
        ctx.artifact("weights")
    except KeyError as error:
        text = handler_traceback(error)
    assert __file__ in text and "mfn/handlers/base.py" in text and "artifact 'weights' is not declared" in text
