"""The simulator in a process of its own, for benchmarks.

A client benchmark must not pay for the server: run in the same process,
the simulator's threads compete for the GIL and its CPU time is counted as
the client's. :class:`SimProcess` starts a :class:`~llm_sync.testing.Simulator`
(any of its keyword arguments) in a spawned child process and speaks to it
over a pipe: ``base_url`` once it listens, ``stats()`` on request.

Not thread-safe: one thread drives one SimProcess (the pipe is not shared).
"""

from __future__ import annotations

import multiprocessing
from multiprocessing.connection import Connection
from types import TracebackType
from typing import Any, Optional

__all__ = ["SimProcess"]

_START_TIMEOUT = 30.0


def _serve(conn: Connection, kwargs: dict[str, Any]) -> None:
    """The child: serve until told to stop (or the parent goes away)."""
    from llm_sync.testing import Simulator

    with Simulator(**kwargs) as sim:
        conn.send(sim.base_url)
        while True:
            try:
                command = conn.recv()
            except EOFError:
                return
            if command == "stats":
                conn.send(sim.stats())
            elif command == "stop":
                conn.send(None)
                return


class SimProcess:
    """``with SimProcess(keys=..., limits=...) as sim:`` — ``sim.base_url``,
    ``sim.stats()``; the child stops when the block ends."""

    def __init__(self, **kwargs: Any) -> None:
        self._kwargs = kwargs
        self._conn: Optional[Connection] = None
        self._process: Optional[multiprocessing.process.BaseProcess] = None
        self.base_url = ""

    def __enter__(self) -> "SimProcess":
        context = multiprocessing.get_context("spawn")  # no copy of our threads or sockets
        ours, theirs = context.Pipe()
        self._process = context.Process(target=_serve, args=(theirs, self._kwargs), daemon=True,
                                        name="llm-sync-bench-simulator")
        self._process.start()
        theirs.close()
        self._conn = ours
        if not ours.poll(_START_TIMEOUT):
            self._stop()
            raise RuntimeError("the simulator process did not start")
        self.base_url = ours.recv()
        return self

    def stats(self) -> dict[Any, dict[int, int]]:
        assert self._conn is not None
        self._conn.send("stats")
        result: dict[Any, dict[int, int]] = self._conn.recv()
        return result

    def __exit__(self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException],
                 traceback: Optional[TracebackType]) -> None:
        self._stop()

    def _stop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.send("stop")
                self._conn.poll(10.0) and self._conn.recv()
            except (OSError, EOFError):
                pass
            self._conn.close()
            self._conn = None
        if self._process is not None:
            self._process.join(10.0)
            if self._process.is_alive():
                self._process.terminate()
                self._process.join()
            self._process = None
