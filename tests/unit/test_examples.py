import importlib.util

import torch

from tests.conftest import EXAMPLES


def test_checked_in_mlp_weights_are_what_make_weights_creates():
    spec = importlib.util.spec_from_file_location("make_weights", EXAMPLES / "mlp" / "make_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rebuilt = module.build_model().state_dict()
    checked_in = torch.jit.load(str(EXAMPLES / "mlp" / "weights.pt")).state_dict()
    assert rebuilt.keys() == checked_in.keys()
    for name, tensor in rebuilt.items():
        assert torch.equal(tensor, checked_in[name]), name
