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
