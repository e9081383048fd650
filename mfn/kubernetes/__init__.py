"""Kubernetes: chart values from the ModelSpec, and helm runs for `mfn deploy --target kubernetes`."""
