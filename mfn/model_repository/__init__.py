"""Triton: render a ModelSpec to config.pbtxt and write a self-contained model repository."""
