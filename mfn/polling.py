"""Waiting for something another process does: one loop for every start, stop and answer mfn waits on."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def poll(check: Callable[[], T], timeout_s: float, every_s: float = 0.05) -> T | None:
    """`check()`'s first truthy value, asked every `every_s` (at least once) until `timeout_s` has passed; None then.

    `check` may raise to end the wait early (a process that exited, say): the error goes to the caller.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        time.sleep(min(every_s, remaining))
