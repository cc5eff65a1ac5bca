"""The simulator in a process of its own, for benchmarks.

A client benchmark must not pay for the server: run in the same process,
the simulator's threads compete for the GIL and its CPU time is counted as
the client's. :class:`SimProcess` starts a :class:`~llm_sync.testing.Simulator`
(any of its keyword arguments) in a child process and speaks to it over
its stdin/stdout: ``base_url`` once it listens, ``stats()`` on request.

Not thread-safe: one thread drives one SimProcess (the pipe is not shared).
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from types import TracebackType
from typing import IO, Any, Optional

__all__ = ["SimProcess", "ROOT", "child_env"]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
"""The repository root: where ``python -m benchmarks...`` children run."""


def child_env() -> dict[str, str]:
    """This environment, with the repository root first on PYTHONPATH (a
    child imports this tree's llm_sync and benchmarks)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}


def _send(stream: IO[str], value: Any) -> None:
    stream.write(pickle.dumps(value).hex() + "\n")
    stream.flush()


def _receive(stream: IO[str]) -> Any:
    line = stream.readline()
    if not line:
        raise EOFError("the simulator process ended")
    return pickle.loads(bytes.fromhex(line.strip()))  # our own child's output only


def _serve() -> None:
    """The child: Simulator(**kwargs read from stdin); serve until told to
    stop, or until stdin closes (the parent went away)."""
    from llm_sync.testing import Simulator

    kwargs = _receive(sys.stdin)
    with Simulator(**kwargs) as sim:
        _send(sys.stdout, sim.base_url)
        for line in sys.stdin:
            command = line.strip()
            if command == "stats":
                _send(sys.stdout, sim.stats())
            elif command == "stop":
                break


class SimProcess:
    """``with SimProcess(keys=..., limits=...) as sim:`` — ``sim.base_url``,
    ``sim.stats()``; the child stops when the block ends. A plain
    subprocess (not multiprocessing): any script may use it, with no
    ``if __name__ == "__main__"`` guard."""

    def __init__(self, **kwargs: Any) -> None:
        self._kwargs = kwargs
        self._process: Optional[subprocess.Popen[str]] = None
        self.base_url = ""

    def __enter__(self) -> "SimProcess":
        self._process = subprocess.Popen([sys.executable, "-m", "benchmarks.simproc"], cwd=ROOT, env=child_env(),
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert self._process.stdin is not None and self._process.stdout is not None
            _send(self._process.stdin, self._kwargs)
            self.base_url = _receive(self._process.stdout)
        except BaseException:
            self._stop()
            raise
        return self

    def stats(self) -> dict[Any, dict[int, int]]:
        assert self._process is not None and self._process.stdin and self._process.stdout
        self._process.stdin.write("stats\n")
        self._process.stdin.flush()
        result: dict[Any, dict[int, int]] = _receive(self._process.stdout)
        return result

    def __exit__(self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException],
                 traceback: Optional[TracebackType]) -> None:
        self._stop()

    def _stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        try:
            assert process.stdin is not None
            process.stdin.write("stop\n")
            process.stdin.close()
        except (OSError, ValueError):
            pass
        try:
            process.wait(10.0)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


if __name__ == "__main__":
    _serve()
