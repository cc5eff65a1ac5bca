"""Hand-written test servers on 127.0.0.1 for what the simulator does not
do: each answers one request its own way (a stream that stalls, a head
that trickles), and ``close()`` ends it."""

from __future__ import annotations

import socket
import threading
import time


class OneShotServer:
    """Accepts one connection, reads the request and hands the socket to
    :meth:`answer`. ``stop`` is set by :meth:`close`; a slow answer waits on
    it. Threading: one server thread; ``close`` may be called from any."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:  # closed before anyone connected
            return
        try:
            conn.recv(65536)
            self.answer(conn)
        except OSError:  # the client went away
            pass
        finally:
            conn.close()

    def answer(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.stop.set()
        self.sock.close()
        self.thread.join(5)


class StallingStream(OneShotServer):
    """Sends a stream's head and one text event, then stalls until closed
    (``stall`` seconds at most)."""

    def __init__(self, stall: float) -> None:
        self.stall = stall
        super().__init__()

    def answer(self, conn: socket.socket) -> None:
        event = (b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
                 b'"delta":{"type":"text_delta","text":"Once"}}\n\n')
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                     + f"{len(event):x}\r\n".encode() + event + b"\r\n")
        self.stop.wait(self.stall)


class TricklingHead(OneShotServer):
    """Sends a status line, then a header one byte at a time (for 10 s at most)."""

    def answer(self, conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nx-slow: ")
        give_up = time.monotonic() + 10
        while not self.stop.wait(0.05) and time.monotonic() < give_up:
            conn.sendall(b"a")
