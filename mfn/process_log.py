"""The log of mfn's own long-running processes (a deployment's supervisor, a route's rollout controller): stdlib
logging, one line per event after its local time, on stderr, which the process's launcher sends to its log file."""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


def configure() -> None:
    """Called first thing in such a process's main(): every `logging.getLogger("mfn...")` message goes to the log."""
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format=FORMAT, datefmt=DATE_FORMAT, force=True)
