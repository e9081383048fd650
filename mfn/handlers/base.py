"""The handler contract: one class whose small lifecycle methods mfn's server adapters call."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from mfn.errors import SpecError
from mfn.handlers.declarations import Batching, Cache, Instances, Tensor, VersionPolicy, Warmup
from mfn.handlers.metrics import HandlerMetrics, InMemoryMetrics
from mfn.spec import unknown_declarations

Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class Context:
    """What a handler instance learns about where it runs.

    Attributes:
        model_dir: Directory of the packaged model version (or of the handler file in-process).
        version: Model version being served.
        device: Torch-style device string: "cpu" or "cuda:N".
        instance: Name of the server instance or worker running this handler.
        logger: Logger for the handler's own messages.
        metrics: The handler's own metrics (`counter`, `gauge`, `histogram`), served on the server's metrics port.
        allow_pickle: Whether the spec trusts pickled objects inside model files (built-in handlers refuse them otherwise).
    """

    model_dir: Path
    version: int
    device: str = "cpu"
    instance: str = "local"
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("mfn.handler"))
    artifact_paths: Mapping[str, Path] = field(default_factory=dict)
    metrics: HandlerMetrics = field(default_factory=lambda: HandlerMetrics(InMemoryMetrics(), "local", 1))
    allow_pickle: bool = False

    def artifact(self, name: str) -> str:
        """Return the local path of a declared artifact.

        Raises:
            KeyError: naming the declared artifacts when `name` is not one of them.
        """
        try:
            return str(self.artifact_paths[name])
        except KeyError:
            declared = ", ".join(sorted(self.artifact_paths)) or "none"
            raise KeyError(f"artifact {name!r} is not declared (declared: {declared}); add it to the handler's artifacts") from None


class Handler:
    """Base class of a model function.

    Subclasses declare `name`, `inputs` and `outputs` (and optionally batching, instances, artifacts,
    requirements, a response cache) as class attributes and implement `predict`. A predict whose answer for
    the same inputs can change says `deterministic = False`. `setup` runs once per server instance;
    `preprocess`/`postprocess` run once per request around the batched `predict`.

    Shapes are per row: `mfn.Tensor("features", "FP32", (4,))` is four values per row, and the batch dimension
    is never written; -1 marks a dimension of any length.

    A class attribute that looks like a declaration but is none is refused at packaging, naming the one meant:
    a public, non-callable attribute whose name is a field of a declaration object (`max_batch_size = 64`:
    write `batching = mfn.Batching(max_batch_size=64)`), whose name is close to a declaration's (`batchng`,
    `input`), or that holds mfn declaration objects under another name. Keep the handler's own class-level
    constants private (`_labels`) or set state on `self` in `setup`; methods are never taken for declarations.
    """

    name: ClassVar[str]
    version: ClassVar[int] = 1
    inputs: ClassVar[list[Tensor]]
    outputs: ClassVar[list[Tensor]]
    batching: ClassVar[Batching] = Batching()
    instances: ClassVar[list[Instances]] = [Instances()]
    artifacts: ClassVar[dict[str, str]] = {}
    requirements: ClassVar[list[str]] = []
    warmup: ClassVar[Warmup | None] = None
    version_policy: ClassVar[VersionPolicy | None] = None
    execution_env: ClassVar[str | None] = None
    parameters: ClassVar[dict[str, str]] = {}
    max_request_mb: ClassVar[int | None] = None
    allow_pickle: ClassVar[bool] = False
    cache: ClassVar[Cache | None] = None
    deterministic: ClassVar[bool] = True

    def setup(self, ctx: Context) -> None:
        """Load weights and other state; runs once per server instance or worker."""

    def preprocess(self, request: Arrays) -> Arrays:
        """Transform one request's inputs (a dict in declared input order) before they join a batch."""
        return request

    def predict(self, inputs: Arrays) -> Arrays:
        """Compute the outputs of one batch: every array's first dimension is the row count.

        `inputs` holds the declared inputs in declared order, whatever order the client sent them in.

        A `predict` that yields instead of returning makes a streaming model function: each yielded dict is
        one chunk of outputs for every row, sent to each request as soon as it is produced (see DONE).
        """
        raise NotImplementedError

    def postprocess(self, response: Arrays) -> Arrays:
        """Transform one request's outputs after the batch is split back."""
        return response

    def teardown(self) -> None:
        """Release resources when the server unloads the model."""


# A yielded chunk may carry a bool array under this key, one value per row: a request whose rows are all True
# ends with this chunk (the others go on). Without it, every request ends when predict's generator does.
DONE = "mfn.done"


def function(
    *,
    name: str,
    inputs: list[Tensor],
    outputs: list[Tensor],
    **declarations: Any,
) -> Callable[[Callable[[Arrays], Arrays]], type[Handler]]:
    """Turn a plain `predict`-like function into a one-method handler class.

    The decorated name becomes a `Handler` subclass, so `module:function_name` is a valid handler reference.

    Raises:
        SpecError: when a keyword names no declaration (`batchng=` for `batching=`), with the one meant.
    """
    problems = unknown_declarations(declarations)
    if problems:
        raise SpecError(f"@mfn.function(name={name!r}): {'; '.join(problems)}")

    def wrap(predict_fn: Callable[[Arrays], Arrays]) -> type[Handler]:
        if inspect.isgeneratorfunction(predict_fn):
            def predict(self: Handler, batch: Arrays) -> Iterator[Arrays]:
                yield from predict_fn(batch)
        else:
            def predict(self: Handler, batch: Arrays) -> Arrays:  # type: ignore[misc]
                return predict_fn(batch)

        attributes = {
            "name": name,
            "inputs": inputs,
            "outputs": outputs,
            **declarations,
            "predict": predict,
            "__module__": predict_fn.__module__,
            "__qualname__": predict_fn.__qualname__,
            "__doc__": predict_fn.__doc__,
            "__wrapped__": staticmethod(predict_fn),
        }
        return type(predict_fn.__name__, (Handler,), attributes)

    return wrap
