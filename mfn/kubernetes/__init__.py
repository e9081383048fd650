"""Kubernetes: chart values from the ModelSpec, helm runs for `mfn deploy --target kubernetes`, and the
model probe and drain wait that the chart's pods run."""
