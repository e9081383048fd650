"""What a TorchServe pod's preStop hook runs before the server is stopped: wait for requests in flight.

TorchServe 0.12 has no drain setting: on SIGTERM it closes every connection at once, failing what is in
flight ("Worker died"). The chart's preStop hook therefore waits here, once Services have stopped sending
new requests, until the server has been quiet (no inference request received or answered) for
`--quiet-s` plus the slowest predict call the model has shown, or until `--timeout-s` is up, and only then
stops the server:

    python3 -m mfn.kubernetes.drain --metrics-port=8082 --timeout-s=30

Quiet is read from TorchServe's Prometheus counters: `ts_inference_requests_total` moves when a request
arrives (REST or gRPC), `ts_inference_latency_microseconds` when one is answered.
"""

from __future__ import annotations

import argparse
import sys
import time

from mfn.servers.drain import metrics_reader, quiet_window_s, wait_until_quiet


def main(argv: list[str] | None = None) -> int:
    """Wait for quiet; always exit 0, since the server must be stopped either way."""
    parser = argparse.ArgumentParser(prog="python -m mfn.kubernetes.drain", description=__doc__.splitlines()[0])
    parser.add_argument("--metrics-port", required=True, type=int, help="TorchServe's metrics port on 127.0.0.1.")
    parser.add_argument("--timeout-s", required=True, type=float, help="The longest wait for requests in flight.")
    parser.add_argument("--quiet-s", type=float, default=2.0, help="How long no request may arrive or finish.")
    args = parser.parse_args(argv)
    started = time.monotonic()
    quiet_s = quiet_window_s(args.metrics_port, args.quiet_s)
    if wait_until_quiet(metrics_reader(args.metrics_port), args.timeout_s, quiet_s):
        print(f"mfn drain: quiet after {time.monotonic() - started:.1f} s")
    else:
        print(f"mfn drain: still busy after {args.timeout_s:g} s; stopping anyway")
    return 0


if __name__ == "__main__":
    sys.exit(main())
