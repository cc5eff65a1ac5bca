"""Progress of many calls: a tqdm bar, a plain stderr line, or a callback.

``progress=True`` draws a ``tqdm`` bar on stderr when the ``[progress]``
extra is installed (tqdm is never required), else a plain line: redrawn in
place on a terminal, written once at the end elsewhere (a log stays
readable). A callable receives ``(done, total)`` after each item.

Threading contract: ``update`` may be called from any thread (each
reporter serialises its own output); ``close`` is called once, by the
thread that owns the batch, and is idempotent.
"""

from __future__ import annotations

import importlib
import sys
import threading
import time
from typing import Any, Callable, Optional, Protocol, TextIO, Union

__all__ = ["Progress", "Reporter", "reporter"]

Progress = Union[bool, Callable[[int, int], Any]]

_BAR_WIDTH = 30


class Reporter(Protocol):
    def update(self, done: int) -> None: ...

    def close(self, interrupted: bool = False) -> None: ...


class _Silent:
    def update(self, done: int) -> None:
        pass

    def close(self, interrupted: bool = False) -> None:
        pass


class _Callback:
    """The caller's own ``(done, total)`` function; what it raises stops the batch."""

    def __init__(self, function: Callable[[int, int], Any], total: int) -> None:
        self._function = function
        self._total = total

    def update(self, done: int) -> None:
        self._function(done, self._total)

    def close(self, interrupted: bool = False) -> None:
        pass


class _TqdmBar:
    def __init__(self, tqdm: Any, total: int, desc: str, out: TextIO) -> None:
        self._lock = threading.Lock()
        self._bar = tqdm(total=total, desc=desc, file=out, unit="call", dynamic_ncols=True)

    def update(self, done: int) -> None:
        with self._lock:
            self._bar.update(done - self._bar.n)

    def close(self, interrupted: bool = False) -> None:
        with self._lock:
            self._bar.close()


class _PlainLine:
    """``[#####.....] 5/10`` redrawn on a terminal; elsewhere one line at the end."""

    def __init__(self, total: int, desc: str, out: TextIO) -> None:
        self._lock = threading.Lock()
        self._total = total
        self._desc = desc
        self._out = out
        self._tty = out.isatty()
        self._done = 0
        self._started = time.monotonic()
        self._closed = False

    def update(self, done: int) -> None:
        with self._lock:
            self._done = done
            if self._tty and not self._closed:
                filled = _BAR_WIDTH * done // self._total
                self._out.write(f"\r{self._desc} [{'#' * filled}{'.' * (_BAR_WIDTH - filled)}] {done}/{self._total}")
                self._out.flush()

    def close(self, interrupted: bool = False) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            elapsed = time.monotonic() - self._started
            state = "interrupted at" if interrupted else "done:"
            prefix = "\n" if self._tty else ""
            self._out.write(f"{prefix}{self._desc} {state} {self._done}/{self._total} in {elapsed:.1f}s\n")
            self._out.flush()


def _tqdm() -> Optional[Any]:
    """tqdm's bar class, or None without the ``[progress]`` extra."""
    try:
        return importlib.import_module("tqdm").tqdm
    except ImportError:
        return None


def reporter(progress: Progress, total: int, desc: str = "llm-sync", out: Optional[TextIO] = None) -> Reporter:
    """The reporter ``progress`` asks for, for ``total`` items."""
    if callable(progress):
        return _Callback(progress, total)
    if not progress:
        return _Silent()
    stream = out if out is not None else sys.stderr
    tqdm = _tqdm()
    if tqdm is not None:
        return _TqdmBar(tqdm, total, desc, stream)
    return _PlainLine(total, desc, stream)
