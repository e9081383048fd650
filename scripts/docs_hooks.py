"""MkDocs hook: pages generated at build time, so they cannot drift from their sources.

- `reference/spec.md`: every ModelSpec field from `schema/modelspec.schema.json`, and the docstrings of the
  handler API (`mfn.Handler`, `mfn.Context`, `mfn.function` and the declarations);
- `benchmarks/index.md`, `benchmarks/soak.md` and `kubernetes-chart.md`: BENCHMARKS.md, RELIABILITY.md and
  helm/mfn/README.md, which the benchmark scripts and the chart keep where they are, with their links made
  relative to the site.

`render_spec_reference()` is a pure function of the schema and the docstrings (no dates, no set or dict order
that could vary), so the same sources give the same page; a test checks it.
"""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "schema" / "modelspec.schema.json"

# Site page → repository file, and how that file's links to docs/ read from the page.
MIRRORED = {
    "benchmarks/index.md": (ROOT / "BENCHMARKS.md", "docs/benchmarks/"),
    "benchmarks/soak.md": (ROOT / "RELIABILITY.md", "docs/benchmarks/"),
    "kubernetes-chart.md": (ROOT / "helm" / "mfn" / "README.md", "docs/"),
}

HANDLER_API = ("Handler", "Context", "function", "Tensor", "Batching", "Instances", "Cache", "Warmup",
               "VersionPolicy", "QueuePolicy")
HANDLER_METHODS = ("setup", "preprocess", "predict", "postprocess", "teardown")
SECTION = re.compile(r"^(Args|Arguments|Attributes|Returns|Yields|Raises):$")


def _type_of(field: dict[str, Any]) -> str:
    """A short type for a schema property: `integer`, `array of Tensor`, `Batching or null`, ..."""
    if "$ref" in field:
        return field["$ref"].rsplit("/", 1)[-1]
    if "anyOf" in field:
        return " or ".join(_type_of(option) for option in field["anyOf"])
    if "enum" in field:
        return " \\| ".join(f"`{value}`" for value in field["enum"])
    kind = field.get("type", "any")
    if kind == "array" and "items" in field:
        return f"array of {_type_of(field['items'])}"
    if kind == "object" and isinstance(field.get("additionalProperties"), dict):
        return f"object of {_type_of(field['additionalProperties'])}"
    return str(kind)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _fields_table(model: dict[str, Any]) -> list[str]:
    required = set(model.get("required", []))
    rows = ["| field | type | default | description |", "|---|---|---|---|"]
    for name, field in model.get("properties", {}).items():
        default = "required" if name in required else f"`{json.dumps(field.get('default'))}`"
        rows.append(f"| `{name}` | {_cell(_type_of(field))} | {_cell(default)} | {_cell(field.get('description', ''))} |")
    return rows


def _docstring(obj: Any) -> list[str]:
    """A Google-style docstring as Markdown: sections become bold labels, their entries bullets."""
    lines, in_section = [], False
    for line in (inspect.getdoc(obj) or "").splitlines():
        if SECTION.match(line.strip()):
            lines += ["", f"**{line.strip()[:-1]}**", ""]
            in_section = True
        elif in_section and line.startswith("    ") and not line.startswith("        "):
            lines.append(f"- {line.strip()}")
        elif in_section and line.startswith("        "):
            lines[-1] += f" {line.strip()}"
        else:
            in_section = in_section and bool(line.strip())
            lines.append(line)
    return lines


def render_spec_reference() -> str:
    """The ModelSpec and handler API reference page, from the checked-in schema and mfn's docstrings."""
    import mfn

    schema = json.loads(SCHEMA.read_text())
    out = [
        "# ModelSpec and handler reference",
        "",
        "Generated from `schema/modelspec.schema.json` (`make schema` writes it from `mfn.spec.ModelSpec`) and from",
        "the docstrings of the handler API. See [Writing handlers](../handlers.md) for a guided tour.",
        "",
        "## ModelSpec",
        "",
        _cell(schema.get("description", "")),
        "",
        *_fields_table(schema),
    ]
    for name, model in schema.get("$defs", {}).items():
        out += ["", f"### {name}", "", _cell(model.get("description", "")), "", *_fields_table(model)]
    out += ["", "## Handler API"]
    for name in HANDLER_API:
        obj = getattr(mfn, name)
        signature = f"{name}{inspect.signature(obj)}" if inspect.isfunction(obj) else name
        out += ["", f"### `mfn.{signature}`", "", *_docstring(obj)]
        if name == "Handler":
            for method in HANDLER_METHODS:
                function = getattr(obj, method)
                out += ["", f"#### `{method}{inspect.signature(function)}`", "", *_docstring(function)]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).rstrip() + "\n"


def mirrored_page(source: Path, docs_prefix: str) -> str:
    """A repository Markdown file as a site page: its links into docs/ made relative to where the page sits."""
    return source.read_text().replace(f"]({docs_prefix}", "](")


def on_files(files: Any, config: Any) -> Any:
    """Add the generated pages to the site."""
    from mkdocs.structure.files import File

    generated = {"reference/spec.md": render_spec_reference()}
    generated.update({page: mirrored_page(source, prefix) for page, (source, prefix) in MIRRORED.items()})
    for page, content in generated.items():
        files.append(File.generated(config, page, content=content))
    return files
