"""The owner of one deployment's route: runs its nginx, and steps and judges its rollout.

`mfn rollout start` spawns it (`python -m mfn.proxy.controller NAME`) at a deployment's first rollout;
`mfn undeploy NAME` stops it. It

- runs nginx in the foreground as its child (the parent-death signal ends nginx with it) and starts it again
  if it dies, with the configuration the rollout commands last wrote;
- while a rollout progresses with `--steps` or a rule (`--max-error-ratio`, `--max-p99-ms`): scrapes both tracks'
  metrics every second, compares them over the current step's window (mfn.proxy.analysis), rolls back
  at once when the canary breaks the rule, and otherwise moves to the next step after `--step-interval`,
  promoting at 100.

A separate process and not the deployment's supervisor: a promotion replaces the primary's supervisor, while
the route and its endpoints stay.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time

from mfn import process_log
from mfn.polling import poll
from mfn.local import locking, state
from mfn.proxy import analysis, fronting, rollout, routes
from mfn.proxy.analysis import Totals
from mfn.proxy.routes import RolloutState
from mfn.errors import MfnError

_log = logging.getLogger(__name__).info
TICK_S = 1.0
NGINX_RESTART_BACKOFF_S = 1.0


class Controller:
    def __init__(self, name: str) -> None:
        self.name = name
        self.stopping = False
        self.nginx: subprocess.Popen | None = None
        self.window_of: float | None = None  # the step (its start time) the baselines belong to
        self.baselines: dict[str, Totals] = {}

    def run(self) -> int:
        route = routes.load(self.name)
        if route is None:
            return 1
        self.nginx = routes.start_nginx(route, parent_death_signal=signal.SIGTERM)
        while not self.stopping:
            route = routes.load(self.name)
            if route is None:
                break
            if self.nginx.poll() is not None:
                _log(f"nginx ended ({self.nginx.returncode}); starting it again")
                time.sleep(NGINX_RESTART_BACKOFF_S)
                try:
                    self.nginx = routes.start_nginx(route, parent_death_signal=signal.SIGTERM)
                except MfnError as error:  # tried again at the next tick
                    _log(f"nginx did not start: {error}")
            self.follow_tracks(route)
            active = route.rollout
            if active is not None and active.state == RolloutState.PROGRESSING and (
                    active.steps or active.max_error_ratio is not None or active.max_p99_ms is not None):
                try:
                    self.judge(route)
                except (OSError, MfnError) as error:  # a track restarting, or the operator's command first
                    _log(f"analysis skipped: {error}")
            self._sleep(TICK_S)
        self._stop_nginx()
        return 0

    def follow_tracks(self, route: routes.Route) -> None:
        """Write the proxy's configuration again when a track changed under it (see fronting.follow_tracks); the
        track's supervisor does so too once it has restarted its server, so this tick catches what it could not."""
        try:
            if fronting.follow_tracks(self.name):
                _log("a track changed (ports or keys): the proxy's configuration was written again")
        except (OSError, MfnError) as error:  # a track between stop and start: the next tick looks again
            _log(f"tracks not followed yet: {error}")

    def judge(self, route: routes.Route) -> None:
        active = route.active
        tracks = {"canary": state.get(active.canary), "primary": state.get(self.name)}
        now = {track: analysis.scrape(deployment.metrics_url) for track, deployment in tracks.items()}
        if self.window_of != active.last_step_at:
            self.window_of, self.baselines = active.last_step_at, now
            return
        figures = {track: analysis.window(self.baselines[track], now[track]) for track in tracks}
        why = analysis.breach(figures["canary"], figures["primary"], active.max_error_ratio, active.max_p99_ms)
        with locking.exclusive(self.name):
            current = routes.load(self.name)
            if current is None or current.rollout is None or current.rollout.state != RolloutState.PROGRESSING:
                return
            current.rollout.analysis = {"window_s": round(time.time() - active.last_step_at, 1),
                                        **{track: value.to_json() for track, value in figures.items()}}
            routes.save(current)
        if why is not None:
            _log(f"rolling back: {why}")
            rollout.abort(self.name, why)
            return
        if active.steps and time.time() >= active.last_step_at + active.step_interval_s:
            later = [step for step in active.steps if step > active.weight]
            if not later or later[0] >= 100:
                _log("last step passed: promoting")
                rollout.promote(self.name)
            else:
                rollout.set_weight(self.name, later[0], f"step to {later[0]:g}% after a window that held")

    def _stop_nginx(self) -> None:
        if self.nginx is not None and self.nginx.poll() is None:
            self.nginx.send_signal(signal.SIGQUIT)  # graceful: requests in flight are answered
            try:
                self.nginx.wait(routes.STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.nginx.kill()

    def _sleep(self, seconds: float) -> None:
        poll(lambda: self.stopping, seconds)


def main(name: str) -> int:
    process_log.configure()
    controller = Controller(name)

    def request_stop(signum: int, frame: object) -> None:
        controller.stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    # Whoever stops the controller (an undeploy) may hold the deployment's lock it waits for.
    locking.give_up_when(lambda: controller.stopping)
    return controller.run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
