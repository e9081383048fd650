"""Deployers: local server processes under a supervisor (the default); Kubernetes is mfn.kubernetes."""
