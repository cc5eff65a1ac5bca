"""What tests of the Redis backend share: the server they may use, a unique
key prefix per test, and a TCP proxy to Redis that a test can cut and
restore (a Redis that goes away mid-run and comes back)."""

from __future__ import annotations

import os
import socket
import threading
import uuid
from typing import Any, Iterator, Optional
from urllib.parse import urlparse

import pytest

REDIS_URL = os.environ.get("LLM_SYNC_TEST_REDIS", "")

needs_redis = [
    pytest.mark.redis,
    pytest.mark.skipif(not REDIS_URL, reason="LLM_SYNC_TEST_REDIS is not set: these tests need a Redis server "
                                             "they may write to (.ci/run sets redis://127.0.0.1:6379/15)"),
]


def redis_client() -> Any:
    import redis

    return redis.Redis.from_url(REDIS_URL)


def unique_prefix() -> str:
    return f"llm_sync:test:{uuid.uuid4().hex[:12]}:"


def delete_prefix(prefix: str) -> None:
    client = redis_client()
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def prefix() -> Iterator[str]:
    """A key prefix no other test (or concurrent run) uses; cleaned after."""
    value = unique_prefix()
    yield value
    delete_prefix(value)


class RedisProxy:
    """A TCP forwarder on 127.0.0.1 to the test Redis. ``cut()`` closes the
    listener and every connection (Redis is gone); ``restore()`` listens on
    the same port again. Threading: ``_lock`` guards the connection list."""

    def __init__(self) -> None:
        target = urlparse(REDIS_URL)
        self.upstream = (target.hostname or "127.0.0.1", target.port or 6379)
        self.db = (target.path or "/0").lstrip("/") or "0"
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener: Optional[socket.socket] = None
        self.port = 0
        self.restore()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/{self.db}"

    def restore(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, []
            listener, self._listener = self._listener, None
        for sock in sockets + ([listener] if listener else []):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=2)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@pytest.fixture
def redis_proxy() -> Iterator[RedisProxy]:
    proxy = RedisProxy()
    yield proxy
    proxy.cut()
