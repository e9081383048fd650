"""Prometheus scrape configs, alert rules, a Grafana dashboard and live statistics for mfn deployments."""
