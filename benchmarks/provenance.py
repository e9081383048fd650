"""Where a benchmark table's figures come from: the day they were measured and the commit of the code measured."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def stamp() -> str:
    """"2026-12-07, commit 1a2b3c4", saying so when mfn/ had changes not yet committed."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    changed = " with uncommitted changes to mfn/" if git("status", "--porcelain", "--", "mfn") else ""
    return f"{time.strftime('%Y-%m-%d')}, commit {commit}{changed}"
