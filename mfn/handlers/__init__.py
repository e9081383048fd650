"""The handler contract and the declarations a handler makes about itself."""

from mfn.handlers.base import DONE, Arrays, Context, Handler, function
from mfn.handlers.declarations import Batching, Cache, Instances, QueuePolicy, Tensor, VersionPolicy, Warmup

__all__ = [
    "DONE",
    "Arrays",
    "Batching",
    "Cache",
    "Context",
    "Handler",
    "Instances",
    "QueuePolicy",
    "Tensor",
    "VersionPolicy",
    "Warmup",
    "function",
]
