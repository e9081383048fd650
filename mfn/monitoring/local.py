"""Monitoring for local deployments: config files for any Prometheus, and a Prometheus of mfn's own."""

from __future__ import annotations

import os
from pathlib import Path

from mfn.polling import poll
from mfn.local import state
from mfn.local.state import Deployment, Prometheus
from mfn.errors import DeployError
from mfn.monitoring import render
from mfn.servers import prometheus
from mfn.servers.http import request
from mfn.servers.process import free_ports, process_start_time, start_detached, stop_process_group

READY_TIMEOUT_S = 30.0
SCRAPE_INTERVAL_S = 1
CONFIG_FILE, RULES_FILE, DASHBOARD_FILE = "prometheus.yml", "rules.yml", "dashboard.json"


def scrape_target(deployment: Deployment) -> render.ScrapeTarget:
    return render.ScrapeTarget(deployment.name, deployment.server, f"{deployment.host}:{deployment.ports['metrics']}")


def write_monitoring_files(deployment: Deployment, directory: Path, interval_s: int = 15) -> list[Path]:
    """Write prometheus.yml (scraping `deployment`), the alert rules and the Grafana dashboard into `directory`."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    files = {
        CONFIG_FILE: render.to_yaml(render.scrape_config([scrape_target(deployment)], interval_s, [RULES_FILE])),
        RULES_FILE: render.to_yaml(render.alert_rules()),
        DASHBOARD_FILE: render.to_json(render.dashboard()),
    }
    for name, text in files.items():
        path = directory / name
        path.touch(mode=0o600)
        path.write_text(text)
    return [directory / name for name in files]


def start_prometheus(deployment: Deployment) -> str:
    """Start Prometheus on 127.0.0.1 scraping the deployment every second; return its URL.

    The process is recorded with the deployment, so `mfn undeploy` stops it too.
    """
    binary = prometheus.find_prometheus()
    directory = Path(deployment.workdir) / "prometheus"
    write_monitoring_files(deployment, directory, SCRAPE_INTERVAL_S)
    (port,) = free_ports(1)
    command = prometheus.server_command(binary, directory / CONFIG_FILE, directory / "data", port)
    process = start_detached(command, dict(os.environ), directory / "prometheus.log", directory)
    url = f"http://127.0.0.1:{port}"
    deployment.prometheus = Prometheus(pid=process.pid, start_time=process_start_time(process.pid), url=url)
    state.save_prometheus(deployment.name, deployment.prometheus)
    if poll(lambda: process.poll() is not None or request("GET", f"{url}/-/ready", timeout_s=1.0)[0] == 200,
            READY_TIMEOUT_S, every_s=0.1) and process.poll() is None:
        return url
    stop_prometheus(deployment)
    log = (directory / "prometheus.log").read_text(errors="replace")[-2000:]
    raise DeployError(f"Prometheus did not become ready:\n{log}")


def stop_prometheus(deployment: Deployment) -> None:
    """Stop the deployment's Prometheus, if it has one."""
    started, deployment.prometheus = deployment.prometheus, None
    if started is not None:
        stop_process_group(started.pid, started.start_time, grace_s=10.0)
        state.save_prometheus(deployment.name, None)
