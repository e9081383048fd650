"""`mfn deploy --idle-timeout`: the supervisor stops an idle deployment's server and starts it again when the next
request comes, through the front that owns the deployment's public ports (mfn.local.front).

Idle means: no byte through the front for the idle timeout, and the server's metrics show no request in the
model's hands or in Triton's queue (a long predict moves no bytes). The stop drains like an undeploy, with the
front holding new requests meanwhile; the wake starts the server with every model loaded before the held
requests are relayed.

While the server sleeps the front answers its metrics port with the server's last scrape and `mfn_asleep 1`, and
each wake adds that scrape's counters to the deployment's history (mfn.local.idle_metrics).
"""

from __future__ import annotations

import sys
import threading
import time
import urllib.request
from typing import TYPE_CHECKING

from mfn.local import idle_metrics
from mfn.local.front import Front
from mfn.local.launching import wait_ports_released
from mfn.local.supervision import ServerState
from mfn.runtime.metric_batching import FLUSH_INTERVAL_S

if TYPE_CHECKING:
    from mfn.local.supervisor import Supervisor

# Gauges that count requests the server holds now: in the model's hands (both servers), queued (Triton).
BUSY_GAUGES = ("mfn_inflight_requests", "nv_inference_pending_request_count")
# Public ports the front owns; the server listens on private ones.
FRONTED = ("http", "grpc")
# What a woken server keeps; its private ports are chosen afresh, as the old ones may meanwhile be the local end
# of some outgoing connection (they come from the ephemeral range).
KEPT_ON_WAKE = ("metrics",)
# The least quiet time before a stop: a handler's metrics reach the server a flush after its last request, and the
# last scrape, served while the server sleeps and added to the history at the wake, must hold them.
SETTLED_S = 2 * FLUSH_INTERVAL_S


class Idling:
    """Stops the supervisor's server after `timeout_s` of idleness and wakes it on the next connection."""

    def __init__(self, supervisor: Supervisor, timeout_s: float, hold_timeout_s: float) -> None:
        self.supervisor = supervisor
        self.timeout_s = timeout_s
        self.hold_timeout_s = hold_timeout_s
        self.asleep = False
        self.wake_requested = threading.Event()
        self._awake = threading.Event()
        self._awake.set()
        self.front: Front | None = None
        self.last_scrape = ""  # the running server's metrics when it was last found idle

    def open_front(self, host: str, ports: dict[str, int]) -> dict[str, int]:
        """Listen on the public ports (fixed ones from `ports`, free ones otherwise); the ports bound."""
        supervisor = self.supervisor
        self.front = Front(host, {protocol: ports.get(protocol, 0) for protocol in FRONTED},
                           lambda: supervisor.deployment.ports if supervisor.deployment else {}, self._awake.is_set, self._wait_awake,
                           hold_timeout_s=self.hold_timeout_s)
        return self.front.start()

    def due(self) -> bool:
        """Whether the running server has been idle for the timeout."""
        assert self.front is not None
        return (not self.asleep and self.front.quiet_for() >= max(self.timeout_s, SETTLED_S)
                and not self.front.answers_owed() and self.supervisor.status.state == ServerState.RUNNING
                and not self._server_busy())

    def sleep(self) -> bool:
        """Stop the server, unless a byte passed since `due()`; whether it stopped."""
        assert self.front is not None
        self.front.hold()
        # From here client bytes wait in the front; one read before the hold shows as activity.
        if self.front.quiet_for() < self.timeout_s or self.front.answers_owed():
            self.front.resume()
            return False
        self._awake.clear()
        self.asleep = True
        # Nothing is in flight: the server's connections can go first, so its drain waits for none of them.
        self.front.detach()
        self.supervisor.drain_and_stop(final_state=ServerState.IDLE)
        self.front.resume()  # the next bytes find no server, and wake it (once this returns: wake runs after it)
        self._serve_last_scrape()
        return True

    def _serve_last_scrape(self) -> None:
        deployment = self.supervisor.deployment
        if deployment is None or self.front is None:
            return
        port = deployment.ports["metrics"]
        wait_ports_released(deployment.host, {"metrics": port})  # TorchServe's JVM closes its sockets late
        try:
            self.front.serve_page(port, idle_metrics.asleep_page(self.last_scrape))
        except OSError as error:  # taken meanwhile: scrapes find the port closed, as they would without the page
            print(f"the metrics port {port} is not answered while asleep: {error}", file=sys.stderr,
                  flush=True)

    def wake(self) -> None:
        """Start the server again; held connections go on once every model is ready."""
        supervisor = self.supervisor
        started = time.monotonic()
        supervisor.status.state = ServerState.WAKING
        supervisor.save_status()
        assert self.front is not None  # started with the deployment, before it could idle
        self.front.stop_page()  # the server takes its metrics port back
        if supervisor.deployment is not None:
            idle_metrics.add_to_history(supervisor.deployment.workdir, self.last_scrape)
        self.last_scrape = ""
        problem = supervisor.bring_back("wake-up", keep_ports=KEPT_ON_WAKE)
        self.wake_requested.clear()
        if problem:
            # Held connections give up at their hold timeout; the next one tries again.
            supervisor.status.state = ServerState.IDLE
            supervisor.status.last_exit = f"wake-up failed: {problem}"
            supervisor.save_status()
            return
        supervisor.status.state = ServerState.RUNNING
        supervisor.status.wakes += 1
        supervisor.status.last_wake_s = round(time.monotonic() - started, 3)
        supervisor.save_status()
        self.asleep = False
        self.front.touch()  # the wake-up's own silence is not idleness
        self._awake.set()

    def close(self) -> None:
        """Close the front; connections still held for a wake-up are closed, not left waiting."""
        self._awake.set()  # front threads waiting for a wake-up return (their connections then close)
        if self.front is not None:
            self.front.close()

    def _wait_awake(self) -> None:
        """Called by the front (from its threads) when it cannot reach the server."""
        if self._awake.is_set():
            return  # up, or being restarted after a crash: the front retries its connection until its hold timeout
        self.wake_requested.set()
        if not self._awake.wait(self.hold_timeout_s):
            raise OSError(f"the server did not wake within {self.hold_timeout_s:g} s")

    def _server_busy(self) -> bool:
        """Whether the server's metrics show a request in its hands; the scrape is kept as `last_scrape`."""
        deployment = self.supervisor.deployment
        if deployment is None:
            return False
        try:
            with urllib.request.urlopen(deployment.metrics_url, timeout=2.0) as response:
                text = response.read().decode(errors="replace")
        except OSError:
            return True  # cannot tell: stay up rather than cut a request short
        self.last_scrape = text
        for line in text.splitlines():
            if line.startswith(BUSY_GAUGES):
                try:
                    if float(line.rsplit(" ", 1)[1]) > 0:
                        return True
                except (IndexError, ValueError):
                    continue
        return False
