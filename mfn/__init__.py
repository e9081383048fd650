"""mfn: write one handler class; package, deploy and invoke it on Triton or TorchServe.

Only the light handler contract is imported eagerly, so `import mfn` in a handler file stays cheap;
the client and the packaging/deploy API load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from mfn.handlers import (
    DONE,
    Arrays,
    Batching,
    Cache,
    Context,
    Handler,
    Instances,
    QueuePolicy,
    Tensor,
    VersionPolicy,
    Warmup,
    function,
)

__version__ = "0.1.0"

_LAZY = {
    "Client": "mfn.client",
    "ModelSpec": "mfn.spec",
    "package": "mfn.packaging",
    "deploy": "mfn.local.deployments",
    "undeploy": "mfn.local.deployments",
    "sign": "mfn.signing",
    "verify": "mfn.signing",
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
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mfn' has no attribute {name!r}")
