"""Module factories for `mfn export` tests."""

import torch


def two_heads():
    class TwoHeads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Linear(4, 8)
            self.head = torch.nn.Linear(8, 3)

        def forward(self, features):
            hidden = torch.relu(self.body(features))
            return self.head(hidden), hidden.sum(dim=1, keepdim=True)

    torch.manual_seed(3)
    return TwoHeads()


def wide_classifier():
    """Big enough (about 330k weights) that int8 weights visibly shrink the file."""
    torch.manual_seed(5)
    return torch.nn.Sequential(torch.nn.Linear(64, 512), torch.nn.ReLU(), torch.nn.Linear(512, 512), torch.nn.ReLU(), torch.nn.Linear(512, 10)).eval()
