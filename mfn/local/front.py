"""The front of an idling deployment: it owns the public HTTP and gRPC ports while the server behind them stops
when idle and starts again on the next connection.

It relays TCP, byte for byte, and parses nothing: one relay serves HTTP/1.1 and gRPC (HTTP/2) alike, and what
reaches the server is exactly what the client sent. A client that connects while the server is stopped is held
(its bytes wait in the front) until the server has loaded every model, then relayed; nothing is refused.

When the supervisor stops the server for idleness it first `hold()`s the front (client bytes wait instead of
going to the draining server), then `detach()`es it: HTTP/1.1 connections stay open to their clients and get
a new server connection with their next request (no request is in flight on an idle connection, and
HTTP/1.1 keeps no state across requests), while HTTP/2 connections (gRPC) are closed, as their state
(stream ids, header tables) lives in the server: gRPC clients reconnect on their next call.

While the server sleeps the front also answers its metrics port with a fixed page (`serve_page`; see
mfn.local.idle_metrics), so a scrape finds the deployment asleep rather than down; the server takes the port back
when it wakes.

Why not a proxy such as Caddy or HAProxy: none of them can start a server on demand and hold a connection until
it is ready; the relay below is small and is tested against both servers with stock clients.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from functools import partial

CHUNK_BYTES = 256 * 1024
CONNECT_RETRY_S = 0.05
PAGE_READ_TIMEOUT_S = 10.0


class _Relay:
    """One client connection and, while attached, its connection to the server."""

    def __init__(self, protocol: str, client_writer: asyncio.StreamWriter) -> None:
        self.protocol = protocol
        self.client_writer = client_writer
        self.server_writer: asyncio.StreamWriter | None = None
        # Held, never awaited: the event loop keeps only a weak reference to a task, which could vanish mid-relay.
        self.server_pump: asyncio.Task | None = None
        # The client spoke last: on HTTP/1.1 (one request at a time per connection) an answer is owed.
        self.answer_owed = False


class Front:
    """Public ports relayed to a server that may be stopped; runs its own event loop in a thread.

    Args:
        host: Address to listen on.
        ports: Public port per protocol ("http", "grpc"); 0 for a free one.
        server_ports: Returns the server's port per protocol now.
        awake: Whether the server is up with every model loaded (its ports may open before that).
        wake: Blocks until the server is up (the supervisor starts it); raises OSError when it cannot be.
        hold_timeout_s: How long a connection waits for the server before the front closes it.
        reattached: Protocols whose client connections outlive a server stop (HTTP/1.1).
    """

    def __init__(self, host: str, ports: dict[str, int], server_ports: Callable[[], dict[str, int]],  # noqa: PLR0913
                 awake: Callable[[], bool], wake: Callable[[], None], hold_timeout_s: float, reattached: frozenset[str] = frozenset({"http"})) -> None:
        self.host = host
        self.hold_timeout_s = hold_timeout_s
        self.ports = dict(ports)
        self._server_ports = server_ports
        self._awake = awake
        self._wake = wake
        self._reattached = reattached
        self._relays: set[_Relay] = set()
        self._last_activity = time.monotonic()
        self._loop = asyncio.new_event_loop()
        self._open: asyncio.Event | None = None
        self._servers: list[asyncio.base_events.Server] = []
        self._page_server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> dict[str, int]:
        """Listen on the public ports; the ports bound (free ones filled in)."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(self._listen())
            except BaseException as error:  # noqa: BLE001 - reported to start()'s caller
                failure.append(error)
                ready.set()
                return
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="mfn-front", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        return dict(self.ports)

    def quiet_for(self) -> float:
        """Seconds since a byte last passed in either direction or a connection opened or closed."""
        return time.monotonic() - self._last_activity

    def touch(self) -> None:
        """Count now as activity (the server just started: the requests that woke it are about to flow)."""
        self._last_activity = time.monotonic()

    def answers_owed(self) -> bool:
        """Whether an HTTP/1.1 connection waits for its answer (gRPC calls are seen in the server's metrics)."""
        return any(relay.answer_owed for relay in list(self._relays) if relay.protocol in self._reattached)

    def hold(self) -> None:
        """Stop relaying client bytes (they wait in the front) until `resume()`; server answers still pass."""
        self._call(lambda: self._open.clear() if self._open else None)

    def detach(self) -> None:
        """The server is gone: drop server connections, keep reattachable client connections, close the rest."""
        self._call(self._detach_all)

    def resume(self) -> None:
        self._call(lambda: self._open.set() if self._open else None)

    def close(self) -> None:
        if self._thread is None:
            return
        self._call(self._close_all)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._thread = None

    def serve_page(self, port: int, page: bytes) -> None:
        """Answer every HTTP request on `port` with `page` (Prometheus text) until `stop_page()`; requests there are
        not activity and wake nothing. Raises OSError when the port cannot be bound."""
        asyncio.run_coroutine_threadsafe(self._open_page(port, page), self._loop).result(timeout=10)

    def stop_page(self) -> None:
        """Stop answering the page's port and release it (the woken server binds it again)."""
        asyncio.run_coroutine_threadsafe(self._close_page(), self._loop).result(timeout=10)

    async def _open_page(self, port: int, page: bytes) -> None:
        await self._close_page()
        head = (f"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                f"Content-Length: {len(page)}\r\nConnection: close\r\n\r\n").encode()

        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), PAGE_READ_TIMEOUT_S)
                writer.write(head + page)
                await writer.drain()
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError):
                pass
            finally:
                writer.close()

        self._page_server = await asyncio.start_server(answer, self.host, port, reuse_address=True)

    async def _close_page(self) -> None:
        server, self._page_server = self._page_server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    def _call(self, action: Callable[[], None]) -> None:
        """Run `action` on the front's loop and wait for it."""
        done = threading.Event()

        def run() -> None:
            try:
                action()
            finally:
                done.set()

        self._loop.call_soon_threadsafe(run)
        done.wait(timeout=10)

    async def _listen(self) -> None:
        self._open = asyncio.Event()
        self._open.set()
        for protocol, port in self.ports.items():
            server = await asyncio.start_server(partial(self._serve, protocol), self.host, port, reuse_address=True)
            self._servers.append(server)
            self.ports[protocol] = server.sockets[0].getsockname()[1]

    async def _serve(self, protocol: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        relay = _Relay(protocol, writer)
        self._relays.add(relay)
        self.touch()
        opened = self._open
        assert opened is not None  # made by start() before any server listens
        try:
            while True:
                data = await reader.read(CHUNK_BYTES)
                if not data:
                    break
                self.touch()
                relay.answer_owed = True
                await opened.wait()
                server_writer = relay.server_writer or await self._attach(relay)
                server_writer.write(data)
                await server_writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._relays.discard(relay)
            self.touch()
            self._drop_server(relay)
            writer.close()

    async def _attach(self, relay: _Relay) -> asyncio.StreamWriter:
        """Connect `relay` to the server, waking it first when it is stopped; the writer towards the server."""
        deadline = time.monotonic() + self.hold_timeout_s
        while True:
            if not self._awake():
                await self._loop.run_in_executor(None, self._wake)
            try:
                reader, writer = await asyncio.open_connection(self.host_for_server, self._server_ports()[relay.protocol])
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(CONNECT_RETRY_S)  # restarting after a crash
        relay.server_writer = writer
        relay.server_pump = asyncio.ensure_future(self._pump_answers(relay, reader, writer))
        return writer

    @property
    def host_for_server(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host

    async def _pump_answers(self, relay: _Relay, reader: asyncio.StreamReader, server_writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await reader.read(CHUNK_BYTES)
                if not data:
                    break
                self.touch()
                relay.answer_owed = False
                relay.client_writer.write(data)
                await relay.client_writer.drain()
        except OSError:
            pass
        if relay.server_writer is server_writer:  # the server ended the connection, not a detach: so does the client's
            relay.client_writer.close()

    def _drop_server(self, relay: _Relay) -> None:
        writer, relay.server_writer = relay.server_writer, None
        if writer is not None:
            writer.close()

    def _detach_all(self) -> None:
        for relay in list(self._relays):
            self._drop_server(relay)
            if relay.protocol not in self._reattached:
                relay.client_writer.close()
        self.touch()

    def _close_all(self) -> None:
        for server in [*self._servers, *([self._page_server] if self._page_server else [])]:
            server.close()
        for relay in list(self._relays):
            self._drop_server(relay)
            relay.client_writer.close()
