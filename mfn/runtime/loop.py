"""The batch loop both server adapters run: check each request, batch, predict once, check, split back.

Server adapters only translate their own request and response objects to and from `dict[str, ndarray]`;
everything a handler can observe happens here, so the same handler behaves the same on every server.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mfn.handlers.base import Arrays, Handler
from mfn.handlers.declarations import Tensor
from mfn.handlers.dtypes import canonical_dtype, numpy_dtype
from mfn.handlers.metrics import InMemoryMetrics
from mfn.runtime.metrics import LoopMetrics, outcome_of
from mfn.spec import ModelSpec


@dataclass
class RequestFailure(Exception):
    """One request's failure, with the HTTP-style status a server should report for it."""

    message: str
    status: int = 400

    def __str__(self) -> str:
        return self.message


Outcome = Arrays | RequestFailure


class BatchLoop:
    """Runs a handler over lists of decoded requests."""

    def __init__(self, handler: Handler, spec: ModelSpec, metrics: LoopMetrics | None = None) -> None:
        self.handler = handler
        self.spec = spec
        self.metrics = metrics or LoopMetrics(InMemoryMetrics(), spec.name, spec.version, spec.streaming)
        self.max_rows = spec.batching.max_batch_size
        self.isolate_failures = spec.batching.isolate_failures
        handler_type = type(handler)
        self._has_preprocess = handler_type.preprocess is not Handler.preprocess
        self._has_postprocess = handler_type.postprocess is not Handler.postprocess
        self._input_names = tuple(tensor.name for tensor in spec.inputs)
        self._expected = [
            (
                tensor.name,
                numpy_dtype(tensor.dtype),
                tensor.dtype == "BYTES",
                len(tensor.shape) + 1,
                [(axis + 1, dim) for axis, dim in enumerate(tensor.shape) if dim != -1],
            )
            for tensor in spec.inputs
        ]
        self._expected_outputs = [
            (tensor.name, numpy_dtype(tensor.dtype), len(tensor.shape) + 1,
             [(axis + 1, dim) for axis, dim in enumerate(tensor.shape) if dim != -1])
            for tensor in spec.outputs
        ]

    def run(self, requests: Sequence[Arrays | Exception]) -> list[Outcome]:
        """Answer every request: outputs for the good ones, a RequestFailure for each failed one."""
        if len(requests) == 1:  # batching off, or a quiet moment: nothing to group, split or isolate
            try:
                prepared = self.prepare(requests[0])
                outcome = self.finish(self._predict_batch([prepared], row_count(prepared)))
            except RequestFailure as failure:
                outcome = failure
            self.metrics.requests("success" if isinstance(outcome, dict) else outcome_of(outcome.status))
            return [outcome]
        outcomes: list[Outcome | None] = [None] * len(requests)
        groups, failures = self.groups(requests)
        for index, refused in failures:
            outcomes[index] = refused
        for members in groups:
            for chunk in chunks_by_rows(members, self.max_rows):
                for index, outcome in zip((i for i, _ in chunk), self._predict([r for _, r in chunk])):
                    outcomes[index] = outcome
        counts = Counter("success" if isinstance(o, dict) else outcome_of(o.status) for o in outcomes)  # type: ignore[union-attr]
        for label, count in counts.items():
            self.metrics.requests(label, count)
        return outcomes  # type: ignore[return-value]

    def groups(
        self, requests: Sequence[Arrays | Exception]
    ) -> tuple[list[list[tuple[int, Arrays]]], list[tuple[int, RequestFailure]]]:
        """The prepared requests grouped by per-row shapes (variable dims may differ per request; only requests
        that agree share a batch), each with its position; and the failed ones with theirs."""
        groups: dict[tuple, list[tuple[int, Arrays]]] = {}
        failures = []
        for index, request in enumerate(requests):
            try:
                prepared = self.prepare(request)
            except RequestFailure as failure:
                failures.append((index, failure))
                continue
            key = tuple(prepared[name].shape[1:] for name in self._input_names)
            groups.setdefault(key, []).append((index, prepared))
        return list(groups.values()), failures

    def prepare(self, request: Arrays | Exception) -> Arrays:
        """One request checked against the spec, in declared input order, preprocessed; raises RequestFailure."""
        if isinstance(request, RequestFailure):
            raise request
        if isinstance(request, Exception):
            raise RequestFailure(f"malformed request: {request}")
        if not self.conforms(request):
            check_inputs(request, self.spec)  # raises, naming what is wrong
        if tuple(request) != self._input_names:
            # Clients may list inputs in any order; handlers that call a model positionally rely on this one.
            request = {name: request[name] for name in self._input_names}
        if not self._has_preprocess:
            return request
        try:
            return self.handler.preprocess(request)
        except Exception as error:
            raise RequestFailure(f"preprocess failed: {type(error).__name__}: {error}", status=500) from error

    def conforms(self, request: Arrays) -> bool:
        """The per-request check on the hot path: no messages, no allocations; check_inputs explains failures."""
        if len(request) != len(self._expected):
            return False
        rows = None
        for name, dtype, accepts_text, ndim, fixed_dims in self._expected:
            array = request.get(name)
            if array is None or array.ndim != ndim:
                return False
            if array.dtype != dtype and not (accepts_text and array.dtype.kind in "OSU"):
                return False
            shape = array.shape
            if any(shape[axis] != dim for axis, dim in fixed_dims):
                return False
            if rows is None:
                rows = shape[0]
            elif shape[0] != rows:
                return False
        return rows is not None and 1 <= rows <= self.max_rows

    def _predict(self, requests: list[Arrays]) -> list[Outcome]:
        rows = [row_count(request) for request in requests]
        try:
            outputs: Arrays | None = self._predict_batch(requests, sum(rows))
        except RequestFailure as failure:
            if len(requests) == 1 or not self.isolate_failures:
                return [failure] * len(requests)
            outputs = None
        if outputs is None:
            # Outside the except block, so the halves' failures are not chained to this one in the server's log.
            return self._isolate(requests)
        return [self.finish(response) for response in split_rows(outputs, rows)]

    def _isolate(self, requests: list[Arrays]) -> list[Outcome]:
        """Bisect a failed batch so only the requests that fail on their own get an error.

        Costs nothing while predict succeeds; one poisoned request among n costs about 2·log2(n) extra calls,
        and a batch where every request fails costs 2n − 2.
        """
        middle = len(requests) // 2
        self.metrics.isolation_predicts(2)
        return self._predict(requests[:middle]) + self._predict(requests[middle:])

    def _predict_batch(self, requests: list[Arrays], rows: int) -> Arrays:
        """One predict call over the concatenated requests; any failure comes out as a RequestFailure."""
        batch = concatenate(requests)
        started = time.perf_counter()
        try:
            outputs = self.handler.predict(batch)
            if not self._outputs_conform(outputs, rows):
                outputs = check_outputs(outputs, self.spec, rows)  # converts what it can, or explains
        except RequestFailure:
            raise
        except Exception as error:
            raise RequestFailure(f"predict failed: {type(error).__name__}: {error}", status=500) from error
        finally:
            self.metrics.batch(rows, time.perf_counter() - started)
        return outputs

    def _outputs_conform(self, outputs: object, rows: int) -> bool:
        """The hot-path output check: exact arrays as declared; anything else goes through check_outputs."""
        if type(outputs) is not dict or len(outputs) != len(self._expected_outputs):
            return False
        for name, dtype, ndim, fixed_dims in self._expected_outputs:
            array = outputs.get(name)
            if type(array) is not np.ndarray or array.dtype != dtype or array.ndim != ndim or array.shape[0] != rows:
                return False
            shape = array.shape
            for axis, dim in fixed_dims:
                if shape[axis] != dim:
                    return False
        return True

    def checked_outputs(self, outputs: object, rows: int) -> Arrays:
        """predict's outputs for `rows` rows as declared, converted where possible; raises RequestFailure."""
        return outputs if self._outputs_conform(outputs, rows) else check_outputs(outputs, self.spec, rows)  # type: ignore[return-value]

    def finish(self, response: Arrays) -> Outcome:
        """One request's outputs after postprocess, or its failure."""
        if not self._has_postprocess:
            return response
        try:
            return self.handler.postprocess(response)
        except Exception as error:  # noqa: BLE001 - a handler's postprocess error fails its request, not the batch
            return RequestFailure(f"postprocess failed: {type(error).__name__}: {error}", status=500)


def check_inputs(request: Arrays, spec: ModelSpec) -> None:
    """Raise RequestFailure naming the first input whose name, dtype or shape disagrees with the spec."""
    declared = {tensor.name for tensor in spec.inputs}
    unknown = sorted(set(request) - declared)
    if unknown:
        raise RequestFailure(f"unknown input(s) {unknown}; {spec.name} takes {sorted(declared)}")
    row_counts = set()
    for tensor in spec.inputs:
        if tensor.name not in request:
            raise RequestFailure(f"missing input {tensor.name!r} ({tensor.dtype} {list(tensor.shape)} per row)")
        array = request[tensor.name]
        problem = tensor_problem(array, tensor)
        if problem:
            raise RequestFailure(f"input {problem}")
        row_counts.add(array.shape[0])
    if len(row_counts) > 1:
        raise RequestFailure(f"inputs disagree on the batch dimension: row counts {sorted(row_counts)}")
    rows = row_counts.pop()
    if rows < 1 or rows > spec.batching.max_batch_size:
        raise RequestFailure(f"batch of {rows} rows: {spec.name} takes 1 to {spec.batching.max_batch_size} rows per request")


def check_outputs(outputs: object, spec: ModelSpec, rows: int) -> Arrays:
    """Return predict's outputs as arrays, or raise RequestFailure saying how they break the declaration and
    what to change. Lists and tuples are read as the declared dtype where their values fit it; an array keeps
    its own dtype, which must be the declared one."""
    declared = [tensor.name for tensor in spec.outputs]
    if not isinstance(outputs, dict):
        raise RequestFailure(f"predict returned {type(outputs).__name__}, not a dict: return {{name: array}} with the "
                             f"declared outputs {_names(declared)}, each with one row per input row", status=500)
    extra = [name for name in outputs if name not in declared]
    missing = [name for name in declared if name not in outputs]
    if extra or missing:
        parts = [f"predict returned {_names(extra)}, which {'is' if len(extra) == 1 else 'are'} not declared"] if extra else []
        parts += [f"predict did not return {_names(missing)}"] if missing else []
        raise RequestFailure(f"{'; '.join(parts)}; declared outputs: {_names(declared)}", status=500)
    checked: Arrays = {}
    for tensor in spec.outputs:
        value = outputs[tensor.name]
        array = _as_output_array(value, tensor)
        problem = tensor_problem(array, tensor)
        if problem is None and array.shape[0] != rows:
            problem = f"{tensor.name!r} has {array.shape[0]} rows for {rows} input rows; return one row per input row"
        elif problem and problem.startswith(f"{tensor.name!r} has dtype "):
            problem += f"; {_cast_hint(value, tensor)}"
        elif problem:
            per_row = ", ".join(str(dim) for dim in tensor.shape)
            problem += f"; return one row per input row, each of shape ({per_row}{',' if len(tensor.shape) == 1 else ''})"
        if problem:
            raise RequestFailure(f"predict output {problem}", status=500)
        checked[tensor.name] = array
    return checked


def _names(names: Sequence[str]) -> str:
    return ", ".join(repr(name) for name in names)


def _cast_hint(value: object, tensor: Tensor) -> str:
    if tensor.dtype == "BYTES":
        return "return bytes or str values in an object array, e.g. np.array(values, dtype=object)"
    if isinstance(value, np.ndarray):
        return f"cast with .astype(np.{_numpy_name(tensor)})"
    return f"convert with np.asarray(value, dtype=np.{_numpy_name(tensor)})"


def _numpy_name(tensor: Tensor) -> str:
    name = numpy_dtype(tensor.dtype).name
    return "bool_" if name == "bool" else name


def _as_output_array(value: object, tensor: Tensor) -> np.ndarray:
    array = np.asarray(value)
    if tensor.dtype == "BYTES":
        if array.dtype.kind in "US":
            # Text from the handler is sent as UTF-8 bytes, the only string form both servers carry.
            array = np.vectorize(lambda item: item.encode() if isinstance(item, str) else bytes(item), otypes=[object])(array)
        return array
    expected = numpy_dtype(tensor.dtype)
    if isinstance(value, (list, tuple)) and array.dtype != expected and array.dtype.kind in "biuf":
        # A list has no dtype of its own: numpy's guess (int64, float64) is read as the declared one where the
        # values fit it, so a list of Python floats is an FP32 output as readily as an FP64 one.
        converted = array.astype(expected)
        if not np.can_cast(array.dtype, expected, "same_kind") or (expected.kind in "iu" and not np.array_equal(converted, array)):
            raise RequestFailure(
                f"predict output {tensor.name!r} is a {type(value).__name__} whose values {tensor.dtype} cannot hold "
                f"exactly (read as {array.dtype}); return values that fit, as np.asarray(values, "
                f"dtype=np.{_numpy_name(tensor)})", status=500)
        array = converted
    return array


def tensor_problem(array: np.ndarray, tensor: Tensor) -> str | None:
    """How `array` breaks the declaration `tensor` (dtype, or rank and fixed dimensions), in the words clients get
    from both servers; None when it conforms."""
    expected = numpy_dtype(tensor.dtype)
    if array.dtype != expected and not (tensor.dtype == "BYTES" and array.dtype.kind in "OSU"):
        return f"{tensor.name!r} has dtype {_dtype_name(array.dtype)}, declared {tensor.dtype}"
    if array.ndim != len(tensor.shape) + 1 or any(
        want not in (-1, got) for want, got in zip(tensor.shape, array.shape[1:])
    ):
        per_row = ["-1" if dim == -1 else str(dim) for dim in tensor.shape]
        return f"{tensor.name!r} has shape {list(array.shape)}, declared [batch, {', '.join(per_row)}]"
    return None


def _dtype_name(dtype: np.dtype) -> str:
    try:
        return f"{canonical_dtype(dtype)} ({dtype})"
    except ValueError:
        return str(dtype)


def concatenate(requests: list[Arrays]) -> Arrays:
    """The requests' rows as one batch (a lone request as it is, without a copy)."""
    if len(requests) == 1:
        return requests[0]
    return {name: np.concatenate([request[name] for request in requests]) for name in requests[0]}


def row_count(request: Arrays) -> int:
    return next(iter(request.values())).shape[0]


def chunks_by_rows(members: list[tuple[int, Arrays]], max_rows: int) -> list[list[tuple[int, Arrays]]]:
    chunks: list[list[tuple[int, Arrays]]] = [[]]
    rows_in_chunk = 0
    for member in members:
        rows = row_count(member[1])
        if chunks[-1] and rows_in_chunk + rows > max_rows:
            chunks.append([])
            rows_in_chunk = 0
        chunks[-1].append(member)
        rows_in_chunk += rows
    return chunks


def split_rows(outputs: Arrays, rows: list[int]) -> list[Arrays]:
    """Each request's rows, as views of the batch outputs (no copies)."""
    if len(rows) == 1:
        return [outputs]
    pieces, start = [], 0
    for count in rows:
        pieces.append({name: array[start:start + count] for name, array in outputs.items()})
        start += count
    return pieces
