"""What a TorchServe pod's preStop hook runs before the server is stopped: wait for requests in flight.

TorchServe 0.12 has no drain setting: on SIGTERM it closes every connection at once, failing what is in
flight ("Worker died"). The chart's preStop hook therefore waits here, once Services have stopped sending
new requests, until the server has answered every request it accepted (its accounts, as a local undeploy
reads them: mfn.servers.drain), or until `--timeout-s` is up, and only then stops the server:

    python3 -m mfn.kubernetes.drain --metrics-port=8082 --timeout-s=30
"""

from __future__ import annotations

import argparse
import socket
import sys
import time

from mfn.servers.drain import wait_until_answered


def main(argv: list[str] | None = None) -> int:
    """Wait until every accepted request is answered; always exit 0, since the server must be stopped either way."""
    parser = argparse.ArgumentParser(prog="python -m mfn.kubernetes.drain", description=__doc__.splitlines()[0])
    parser.add_argument("--metrics-port", required=True, type=int, help="TorchServe's metrics port on 127.0.0.1.")
    parser.add_argument("--timeout-s", required=True, type=float, help="The longest wait for requests in flight.")
    args = parser.parse_args(argv)
    started = time.monotonic()
    unanswered = wait_until_answered(f"http://127.0.0.1:{args.metrics_port}/metrics",
                                     lambda: None if _listening(args.metrics_port) else "gone", args.timeout_s)
    if unanswered:
        print(f"mfn drain: {unanswered:g} accepted requests still unanswered after {args.timeout_s:g} s; stopping anyway")
    else:
        print(f"mfn drain: every accepted request answered after {time.monotonic() - started:.1f} s")
    return 0


def _listening(port: int) -> bool:
    """The server still runs: its metrics port takes connections (a scrape that times out under load does not say
    it has gone; a refused connection does)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2.0):
            return True
    except ConnectionRefusedError:
        return False
    except OSError:
        return True


if __name__ == "__main__":
    sys.exit(main())
