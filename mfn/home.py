"""Where mfn keeps what it writes for this user: deployment records, caches, built libraries."""

from __future__ import annotations

import os
from pathlib import Path


def mfn_home() -> Path:
    """`$MFN_HOME`, else `~/.mfn`."""
    return Path(os.environ.get("MFN_HOME") or Path.home() / ".mfn")
