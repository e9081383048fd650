"""Deployers: local server processes (the default) and, later, Kubernetes."""
