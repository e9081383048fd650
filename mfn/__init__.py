"""mfn: write one handler class; package, deploy and invoke it on Triton or TorchServe.

Every public name loads on first use: `import mfn` alone imports nothing else, so the processes that never
touch a handler (the CLI's status and invoke, a deployment's supervisor) do not pay for numpy and pydantic,
and a handler file pays only for the handler contract it uses.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mfn.client import Client
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
    from mfn.local.deployments import deploy, undeploy
    from mfn.packaging import package
    from mfn.signing import sign, verify
    from mfn.spec import ModelSpec

__version__ = "0.1.0"

_HANDLER_CONTRACT = ("DONE", "Arrays", "Batching", "Cache", "Context", "Handler", "Instances", "QueuePolicy", "Tensor",
                     "VersionPolicy", "Warmup", "function")
_LAZY = {
    **dict.fromkeys(_HANDLER_CONTRACT, "mfn.handlers"),  # which loads each from its own module
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
    "Client",
    "Context",
    "Handler",
    "Instances",
    "ModelSpec",
    "QueuePolicy",
    "Tensor",
    "VersionPolicy",
    "Warmup",
    "deploy",
    "function",
    "package",
    "sign",
    "undeploy",
    "verify",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # looked up once
        return value
    raise AttributeError(f"module 'mfn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
