"""The batch loop for streaming model functions: predict yields chunks, each split back to its requests at once.

Both adapters drive `stream()` the same way: each step it yields is the events of one chunk of a batch (or the
requests refused before predict); they send every event's chunk to its request at once, and end a request on its
`last` event. Requests are checked, grouped and batched as in BatchLoop.run;
a batch's generator runs only while one of its requests still wants chunks, and is closed when none does.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from mfn.handlers.base import DONE, Arrays
from mfn.runtime.loop import BatchLoop, RequestFailure, chunks_by_rows, concatenate, row_count
from mfn.runtime.metrics import outcome_of

# nginx's "client closed request": the status a cancelled request's failure carries (it is never sent).
CANCELLED_STATUS = 499


@dataclass
class StreamEvent:
    """One step of one request: a chunk of its outputs, or its failure; `last` ends the request.

    A last event may carry no chunk (`outcome` None): the generator ended after the request's last chunk.
    """

    index: int
    outcome: Arrays | RequestFailure | None
    last: bool


def stream(
    loop: BatchLoop, requests: Sequence[Arrays | Exception], cancelled: Callable[[int], bool] = lambda index: False
) -> Iterator[list[StreamEvent]]:
    """Run a streaming handler over `requests`, one step per chunk; `cancelled(index)` is asked between chunks for
    each live request."""
    groups, failures = loop.groups(requests)
    for index, failure in failures:
        loop.metrics.requests(outcome_of(failure.status))
    if failures:
        yield [StreamEvent(index, failure, True) for index, failure in failures]
    for members in groups:
        for batch_members in chunks_by_rows(members, loop.max_rows):
            yield from _stream_batch(loop, batch_members, cancelled)


def _stream_batch(  # noqa: C901
    loop: BatchLoop, members: list[tuple[int, Arrays]], cancelled: Callable[[int], bool]
) -> Iterator[list[StreamEvent]]:
    live: dict[int, tuple[int, int]] = {}  # request position -> its rows in the batch
    start = 0
    for index, request in members:
        rows = row_count(request)
        live[index] = (start, start + rows)
        start += rows
    total_rows = start
    sent = dict.fromkeys(live, 0)
    batch = concatenate([request for _, request in members])
    started = time.perf_counter()
    generator = None
    first = True
    try:
        generator = iter(loop.handler.predict(batch))
        for chunk in generator:
            if first:
                loop.metrics.first_chunk(time.perf_counter() - started)
                first = False
            done, outputs = _split_done(chunk, total_rows)
            outputs = loop.checked_outputs(outputs, total_rows)
            step = []
            for index in list(live):
                if cancelled(index):
                    step.append(_end(loop, live, sent, index, RequestFailure("the client cancelled the request", CANCELLED_STATUS)))
                    continue
                first_row, stop = live[index]
                piece = loop.finish({name: array[first_row:stop] for name, array in outputs.items()})
                if isinstance(piece, RequestFailure):
                    step.append(_end(loop, live, sent, index, piece))
                    continue
                sent[index] += 1
                if done is not None and bool(np.all(done[first_row:stop])):
                    step.append(_end(loop, live, sent, index, piece))
                else:
                    step.append(StreamEvent(index, piece, False))
            yield step
            if not live:
                break
        if live:
            yield [_end(loop, live, sent, index, None) for index in list(live)]
    except RequestFailure as failure:
        if live:
            yield [_end(loop, live, sent, index, failure) for index in list(live)]
    except Exception as error:  # noqa: BLE001 - a handler's error fails the streams it was serving, not the stub
        crashed = RequestFailure(f"predict failed: {type(error).__name__}: {error}", status=500)
        crashed.__cause__ = error
        if live:
            yield [_end(loop, live, sent, index, crashed) for index in list(live)]
    finally:
        if generator is not None and hasattr(generator, "close"):
            generator.close()  # runs the handler's finally blocks when every request is gone early
        loop.metrics.batch(total_rows, time.perf_counter() - started)


def _end(loop: BatchLoop, live: dict, sent: dict, index: int, outcome: Arrays | RequestFailure | None) -> StreamEvent:
    """The request's last event; its outcome and chunk count go to the metrics."""
    del live[index]
    if isinstance(outcome, RequestFailure):
        loop.metrics.requests("cancelled" if outcome.status == CANCELLED_STATUS else outcome_of(outcome.status))
    else:
        loop.metrics.requests("success")
    loop.metrics.chunks(sent[index])
    return StreamEvent(index, outcome, True)


def _split_done(chunk: object, rows: int) -> tuple[np.ndarray | None, object]:
    """The chunk's per-row done mask (see mfn.DONE) and its outputs without it."""
    if not isinstance(chunk, dict) or DONE not in chunk:
        return None, chunk
    outputs = {name: value for name, value in chunk.items() if name != DONE}
    done = np.asarray(chunk[DONE], dtype=bool).reshape(-1)
    if done.shape[0] != rows:
        raise RequestFailure(f"predict yielded {DONE} with {done.shape[0]} values for {rows} rows; give one per row",
                             status=500)
    return done, outputs
