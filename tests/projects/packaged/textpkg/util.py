"""A module of the package the handler imports relatively."""


def triple(x):
    return x * 3
