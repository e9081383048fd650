"""Model code kept beside the handler."""


def double(x):
    return x * 2
