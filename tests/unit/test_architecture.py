"""The import graph of mfn/ has no cycles: each module's imports point one way."""

from __future__ import annotations

import grimp


def test_no_module_imports_itself_back():
    graph = grimp.build_graph("mfn")
    cycles = sorted(
        f"{module} -> {imported} -> ... -> {module}: {graph.find_shortest_chain(importer=imported, imported=module)}"
        for module in graph.modules
        for imported in graph.find_modules_directly_imported_by(module)
        if graph.chain_exists(importer=imported, imported=module)
    )
    assert not cycles, "import cycles:\n" + "\n".join(cycles)
