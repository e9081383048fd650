"""The handler contract and the declarations a handler makes about itself.

The names load on first use, so that importing one part (the declarations, which mfn.spec builds on) does
not import the others (the Handler base, which itself reads mfn.spec).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mfn.handlers.base import DONE, Arrays, Context, Handler, function
    from mfn.handlers.declarations import Batching, Cache, Instances, QueuePolicy, Tensor, VersionPolicy, Warmup

_FROM = {
    **dict.fromkeys(("DONE", "Arrays", "Context", "Handler", "function"), "mfn.handlers.base"),
    **dict.fromkeys(("Batching", "Cache", "Instances", "QueuePolicy", "Tensor", "VersionPolicy", "Warmup"),
                    "mfn.handlers.declarations"),
}

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


def __getattr__(name: str) -> Any:
    if name in _FROM:
        value = getattr(importlib.import_module(_FROM[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mfn.handlers' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_FROM])
