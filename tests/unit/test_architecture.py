"""The shape of mfn/: no import cycles, layers that import only downwards, no module over 400 lines.

The layers, top to bottom (a module may import its own layer and those below; imports needed only for type
annotations are not counted):
"""

from __future__ import annotations

from pathlib import Path

import grimp
import pytest

LAYERS = (
    ("mfn.cli",),
    ("mfn.client",),
    # A server's admin module drives a local deployment through that server's APIs, so it sits with the local
    # runtime; its launch module (command line, configuration) serves pods too and sits below.
    ("mfn.local", "mfn.proxy", "mfn.servers.triton.admin", "mfn.servers.torchserve.admin", "mfn.kubernetes",
     "mfn.monitoring", "mfn.signing", "mfn.tuning"),
    ("mfn.servers",),
    ("mfn.packaging", "mfn.model_files", "mfn.convert", "mfn.store"),
    ("mfn.model_repository", "mfn.archiver"),
    ("mfn.runtime",),
    ("mfn.handlers",),
    ("mfn.spec", "mfn.handlers.declarations", "mfn.handlers.dtypes"),
    ("mfn.errors", "mfn.environment", "mfn.manifest", "mfn.kinds", "mfn.files", "mfn.polling", "mfn.prometheus_text",
     "mfn.process_log", "mfn.progress", "mfn.home", "mfn.sizes"),
)
__doc__ += "\n".join(f"    {index + 1}. {', '.join(layer)}" for index, layer in enumerate(LAYERS))
MAX_MODULE_LINES = 400
# The package itself: its lazy exports reach every layer by design.
FACADE = "mfn"


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("mfn", exclude_type_checking_imports=True)


def layer_of(module: str) -> int | None:
    """The index of the layer whose most specific prefix names `module` (mfn.handlers.declarations sits below
    mfn.handlers)."""
    matches = [(len(prefix), index) for index, layer in enumerate(LAYERS) for prefix in layer
               if module == prefix or module.startswith(prefix + ".")]
    return max(matches)[1] if matches else None


def test_no_module_imports_itself_back(graph):
    cycles = sorted(
        f"{module} -> {imported} -> ... -> {module}: {graph.find_shortest_chain(importer=imported, imported=module)}"
        for module in graph.modules
        for imported in graph.find_modules_directly_imported_by(module)
        if graph.chain_exists(importer=imported, imported=module)
    )
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_every_module_has_a_layer(graph):
    unplaced = sorted(module for module in graph.modules if module != FACADE and layer_of(module) is None)
    assert not unplaced, f"add these to a layer in {__name__}.LAYERS: {unplaced}"


def test_layers_import_only_downwards(graph):
    upward = sorted(
        f"{module} (layer {layer_of(module) + 1}) imports {imported} (layer {layer_of(imported) + 1})"
        for module in graph.modules if module != FACADE and layer_of(module) is not None
        for imported in graph.find_modules_directly_imported_by(module)
        if imported != FACADE and layer_of(imported) is not None and layer_of(imported) < layer_of(module)
    )
    assert not upward, "imports that go up a layer:\n" + "\n".join(upward)


def test_no_module_is_over_400_lines():
    root = Path(__file__).resolve().parents[2] / "mfn"
    long = sorted(f"{path.relative_to(root.parent)}: {lines}" for path in root.rglob("*.py")
                  if (lines := len(path.read_text().splitlines())) > MAX_MODULE_LINES)
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_the_client_reaches_local_deployments_only_through_its_resolver(graph):
    """mfn.client asks one injected interface (mfn.client.endpoints.Resolver) about local deployments; mfn's own
    resolver, made by default, is its only import of the local runtime."""
    reaching = sorted(
        f"{module} imports {imported}"
        for module in graph.modules if module == "mfn.client" or module.startswith("mfn.client.")
        for imported in graph.find_modules_directly_imported_by(module)
        if imported.split(".")[:2] in (["mfn", "local"], ["mfn", "proxy"], ["mfn", "store"])
    )
    assert reaching == ["mfn.client.endpoints imports mfn.local.resolver"]
