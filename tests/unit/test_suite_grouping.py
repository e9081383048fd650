"""The suite's own grouping for pytest-xdist (tests/conftest.py): tests that share a module's deployment must land
on one worker, or each worker starts that deployment again."""

from __future__ import annotations

import pytest
from xdist.scheduler.loadgroup import LoadGroupScheduling

from tests.conftest import group_name


@pytest.mark.parametrize("params", [[], ["triton"], ["torchserve", 4]])
def test_xdist_reads_back_each_group_name_from_a_parametrized_node_id(params):
    group = group_name("integration/test_idle.py", params)
    node_id = f"tests/integration/test_idle.py::test_wakes[{'-'.join(map(str, params)) or 'x'}]@{group}"
    # _split_scope is what LoadGroupScheduling groups node ids by; it needs no scheduler state.
    assert LoadGroupScheduling._split_scope(None, node_id) == group  # type: ignore[arg-type]


def test_under_make_test_this_node_id_carries_its_group(request):
    """The renaming xdist's loadgroup relies on (a pytest that ignores it puts every test in a group of its own)."""
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("only pytest-xdist's loadgroup workers (make test) rename node ids")
    assert request.node.nodeid.endswith("@" + group_name("unit/test_suite_grouping.py", []))
