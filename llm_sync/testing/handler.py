"""HTTP plumbing of the simulator: server, request handler and routing.

Clients are judged on connection handling too, so the server speaks HTTP/1.1
with keep-alive: every plain body has a Content-Length and streams use chunked
transfer encoding, leaving the connection reusable.  Each request becomes an
:class:`~.exchange.Exchange`, routed to the endpoint simulations.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from . import anthropic_api, openai_api
from .error_bodies import anthropic_quota_error, openai_quota_error
from .exchange import Exchange
from .faults import Fault, FaultKind
from .protocols import SimulatorState
from .wire import apply_wire_fault

__all__ = ["Exchange", "SimHandler", "SimServer"]


class SimServer(ThreadingHTTPServer):
    """A threading server that counts connections and can sever them on stop."""

    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default backlog of 5 drops SYNs when many clients
    # connect at once, and each drop costs the client a 1 s retransmit.
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], simulator: SimulatorState) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.simulator: SimulatorState = simulator
        self.accepted = 0
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, SimHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Count the connection before its handler thread can answer anything."""
        with self._open_lock:
            self.accepted += 1
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Wake idle keep-alive handlers so no thread outlives ``stop()`` for long."""
        with self._open_lock:
            sockets = list(self._open)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet about clients hanging up; report genuine bugs."""
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class SimHandler(BaseHTTPRequestHandler):
    """Routes each request to the Anthropic or OpenAI endpoint simulations."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else keep-alive requests stall ~40 ms on delayed ACKs
    server: SimServer

    def version_string(self) -> str:
        """Identify as the simulator rather than as Python's http.server."""
        return "llm-sync-simulator"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        """Stay quiet: users' test output must not fill with access logs."""

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _read_body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            parts: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self, method: str) -> None:
        try:
            raw = self._read_body()
        except ValueError:
            self.send_error(400, "Malformed request body")
            self.close_connection = True
            return
        sent_path = self.path.split("?", 1)[0]
        exchange = Exchange(self, method, _route_path(sent_path, self.server.simulator.path_prefix), raw, sent_path)
        sim = exchange.sim
        try:
            if sim.latency > 0:
                time.sleep(sim.latency)
            wire = sim._faults.take(exchange.path, exchange.key_index, in_stream=False, on_wire=True)
            if wire is not None:
                exchange.write_body = apply_wire_fault(self, wire) or exchange.write_body
            fault = sim._faults.take(exchange.path, exchange.key_index, in_stream=False)
            if fault is not None:
                _apply_fault(exchange, fault)
            else:
                _route(exchange)
        except Exception as exc:  # a simulator bug must not look like a hang
            if exchange.answered:
                self.close_connection = True
                if not isinstance(exc, OSError):
                    raise
                return
            exchange.send_error(500, f"simulator error: {type(exc).__name__}: {exc}")


def _route_path(path: str, prefix: str) -> str:
    """The ``/v1/...`` route a path sent under ``prefix`` stands for; a path
    outside the prefix maps to one no route has (answered 404)."""
    if prefix == "/v1":
        return path
    if path.startswith(prefix + "/"):
        return "/v1" + path[len(prefix):]
    return "/outside-prefix" + path


def _models(exchange: Exchange) -> None:
    (openai_api if exchange.family == "openai" else anthropic_api).models(exchange)


_Endpoint = Callable[[Exchange], None]
_ROUTES: dict[str, tuple[str, _Endpoint]] = {
    "/v1/messages": ("POST", anthropic_api.messages),
    "/v1/messages/count_tokens": ("POST", anthropic_api.count_tokens_endpoint),
    "/v1/chat/completions": ("POST", openai_api.chat_completions),
    "/v1/models": ("GET", _models),
}


def _route(exchange: Exchange) -> None:
    route = _ROUTES.get(exchange.path)
    if route is None:
        message = f"Invalid URL ({exchange.method} {exchange.sent_path})"
        exchange.send_error(404, message if exchange.family == "openai" else "Not found")
        return
    method, endpoint = route
    if exchange.method != method:
        exchange.send_error(405, f"Method {exchange.method} not allowed", headers={"allow": method})
        return
    endpoint(exchange)


def _apply_fault(exchange: Exchange, fault: Fault) -> None:
    if fault.delay > 0:
        time.sleep(fault.delay)
    openai = exchange.family == "openai"
    if fault.kind is FaultKind.STATUS:
        if fault.body is None:
            exchange.send_error(fault.status, headers=fault.headers)
        else:
            exchange.send_json(fault.status, fault.body, fault.headers)
    elif fault.kind is FaultKind.QUOTA_EXCEEDED:
        now = exchange.sim._wall_clock()
        body = openai_quota_error() if openai else anthropic_quota_error(now, exchange.request_id)
        exchange.send_json(429, body, fault.headers)
    elif fault.kind is FaultKind.INVALID_JSON:
        whole = json.dumps(
            openai_api.sample_body(exchange) if openai else anthropic_api.sample_body(exchange)
        ).encode()
        exchange.send_bytes(200, whole[: len(whole) // 2], fault.headers)
    elif fault.kind is FaultKind.DISCONNECT:
        exchange._record(None)
        exchange.abort()
    elif fault.kind is FaultKind.REDIRECT:
        headers = {"location": fault.location or "/", **fault.headers}
        exchange.send_bytes(fault.status, b"", headers)
    elif fault.kind in (FaultKind.HEADERS, FaultKind.USAGE, FaultKind.ECHO_KEY):
        _alter_answer(exchange, fault)
    else:  # pragma: no cover - stream faults never match here
        raise AssertionError(f"unexpected fault kind {fault.kind}")


def _alter_answer(exchange: Exchange, fault: Fault) -> None:
    """Answer as usual, altered: extra headers, other usage figures, or a
    header (and, for an error status, the body's ``request_id``) that
    echoes the key the request presented, as a careless proxy would."""
    exchange.extra_headers.update(fault.headers)
    exchange.usage_override.update(fault.usage)
    if fault.kind is FaultKind.ECHO_KEY:
        presented = exchange.presented_key()
        exchange.extra_headers[fault.echo_header or "x-echo-key"] = presented
        if fault.status != 200:
            body = {"type": "error", "error": {"type": "api_error", "message": "Simulated failure"},
                    "request_id": presented}
            exchange.send_json(fault.status, body)
            return
    _route(exchange)
