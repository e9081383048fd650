"""Offline model tools: `mfn export` (export.py), `mfn quantize` (quantize.py) and the TensorFlow conversions they
share (tensorflow.py). They run on the user's machine, never in a server."""
