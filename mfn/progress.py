"""Progress of long operations (deploy, rollouts, operator commands, tuning) as stdlib logging.

Each step is one INFO record on the `mfn.progress` logger. Nothing is shown unless someone listens: the CLI
shows the lines on stderr (not with --json), a supervisor forwards them to the `mfn deploy` that waits for it
and into its own log, and a library caller configures logging as for any other library, or passes
`progress=` to `mfn.deploy`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

LOGGER = logging.getLogger("mfn.progress")


def step(message: str) -> None:
    """One line of progress."""
    LOGGER.info(message)


class _Forward(logging.Handler):
    def __init__(self, show: Callable[[str], None]) -> None:
        super().__init__(logging.INFO)
        self.show = show

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.show(record.getMessage())
        except Exception:  # noqa: BLE001 - a failing display must not fail the operation it reports on
            self.handleError(record)


@contextmanager
def shown_by(show: Callable[[str], None] | None) -> Iterator[None]:
    """Send each progress line to `show` while the block runs (nothing changes for None)."""
    if show is None:
        yield
        return
    handler = _Forward(show)
    level = LOGGER.level
    if LOGGER.getEffectiveLevel() > logging.INFO:
        LOGGER.setLevel(logging.INFO)
    LOGGER.addHandler(handler)
    try:
        yield
    finally:
        LOGGER.removeHandler(handler)
        LOGGER.setLevel(level)
