"""The client's open connections: shared by threads, or one per thread where the library demands it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class Connections:
    """Connections by key, made on first use. A per-thread connection (tritonclient.http's client runs on gevent and
    must stay on the thread that made it) is made once per thread; those of threads that ended are closed."""

    def __init__(self) -> None:
        self._shared: dict[str, Any] = {}
        self._per_thread = threading.local()
        self._thread_owned: list[tuple[threading.Thread, Any]] = []
        self._lock = threading.Lock()

    def get(self, key: str, make: Callable[[], Any], per_thread: bool = False) -> Any:
        if per_thread:
            return self._thread_connection(key, make)
        connection = self._shared.get(key)
        if connection is None:
            with self._lock:
                connection = self._shared.get(key)
                if connection is None:
                    connection = self._shared[key] = make()
        return connection

    def drop(self, key: str) -> None:
        """Close this thread's connection under `key` after a failure; the next call opens a new one."""
        mine = getattr(self._per_thread, "connections", {})
        connection = mine.pop(key, None)
        if connection is not None:
            with self._lock:
                self._thread_owned = [(thread, each) for thread, each in self._thread_owned if each is not connection]
            connection.close()

    def close(self) -> None:
        with self._lock:
            connections = [*self._shared.values(), *(connection for _, connection in self._thread_owned)]
            self._shared, self._thread_owned = {}, []
        self._per_thread = threading.local()
        for connection in connections:
            connection.close()

    def _thread_connection(self, key: str, make: Callable[[], Any]) -> Any:
        mine = getattr(self._per_thread, "connections", None)
        if mine is None:
            mine = self._per_thread.connections = {}
        if key not in mine:
            mine[key] = make()
            with self._lock:
                # Connections of threads that have ended are closed here, so thread churn does not pile them up.
                alive = [(thread, each) for thread, each in self._thread_owned if thread.is_alive()]
                for thread, each in self._thread_owned:
                    if not thread.is_alive():
                        each.close()
                self._thread_owned = [*alive, (threading.current_thread(), mine[key])]
        return mine[key]
