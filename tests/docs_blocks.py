"""The code blocks of README.md and docs/, with the marker that says how a test runs each.

A block in bash, sh, shell, console, python or py is preceded by a `<!-- test: KIND -->` line (an HTML comment:
GitHub and the site show nothing of it). The kinds, and what tests/integration/test_docs_examples.py does:

- `deployment`: shell run against the test session's shared deployments, once per server, with `NAME` set to
  the deployment's name; a page's `deployment` blocks run in page order as one script per server, so a later
  block uses what an earlier one set. `deployment:triton` and `deployment:torchserve` join one server's script.
- `shell`: a whole shell session, run alone in a temporary directory holding a copy of `examples/`; any
  deployment it leaves behind is undeployed.
- `python`: a whole Python script, run alone the same way.
- `handler`: a handler module, written to `handler.py` after `import numpy as np` and `import mfn`, and
  packaged with `mfn.package` (which imports it and runs its `predict` on a sample batch).
- `no: REASON`: illustrative (a skeleton with elided parts, commands that need a cluster or files of your own);
  never run, and the reason is required.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNNABLE_LANGUAGES = {"bash", "sh", "shell", "console", "python", "py"}
KINDS = {"deployment", "deployment:triton", "deployment:torchserve", "shell", "python", "handler"}
FENCE = re.compile(r"^(?:<!-- test: (?P<kind>[^\n]*?) -->\n)?```(?P<language>[\w+-]*)[^\n]*\n(?P<code>.*?)^```$",
                   re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class Block:
    page: str  # relative to the repository root
    line: int
    language: str
    kind: str | None  # None: no marker
    code: str

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def blocks() -> list[Block]:
    found = []
    for page in pages():
        text = page.read_text()
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start("language")) + 1
            found.append(Block(str(page.relative_to(ROOT)), line, match["language"], match["kind"], match["code"]))
    return found


def runnable(kind: str) -> list[Block]:
    """Blocks of one kind, each distinct code once (the README repeats a page's quick start)."""
    unique: dict[str, Block] = {}
    for block in blocks():
        if block.kind == kind:
            unique.setdefault(block.code, block)
    return list(unique.values())
