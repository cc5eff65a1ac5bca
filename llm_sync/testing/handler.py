"""HTTP plumbing of the simulator: server, request handler and one-shot answers.

Clients are judged on connection handling too, so the server speaks HTTP/1.1
with keep-alive: every plain body has a Content-Length and streams use chunked
transfer encoding, leaving the connection reusable.  Every answer is recorded
before its first byte is written, so a test that has its response can already
see the recording.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from . import anthropic_api, openai_api
from .error_bodies import DEFAULT, anthropic_error, anthropic_quota_error, openai_error
from .error_bodies import openai_quota_error
from .faults import Fault, FaultKind
from .recording import RecordedRequest

if TYPE_CHECKING:
    from .simulator import Simulator

__all__ = ["Exchange", "SimHandler", "SimServer"]

_SECRET_HEADERS = frozenset({"x-api-key", "authorization", "api-key"})
_OPENAI_PREFIXES = ("/v1/chat/", "/v1/completions", "/v1/embeddings", "/v1/responses")
_REDACTED = "***"


class SimServer(ThreadingHTTPServer):
    """A threading server that counts connections and can sever them on stop."""

    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default backlog of 5 drops SYNs when many clients
    # connect at once, and each drop costs the client a 1 s retransmit.
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], simulator: Simulator) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.simulator = simulator
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


class Exchange:
    """One request in flight, with helpers that answer it exactly once."""

    def __init__(
        self,
        handler: SimHandler,
        method: str,
        path: str,
        raw: bytes,
        sent_path: str | None = None,
    ) -> None:
        self.handler = handler
        self.sim: Simulator = handler.server.simulator
        self.method = method
        self.path = path
        """The route (``/v1/...``) whatever the simulator's ``path_prefix``."""
        self.sent_path = sent_path or path
        """The path as the client sent it (without the query string)."""
        self.raw = raw
        self.headers: dict[str, str] = {k.lower(): v for k, v in handler.headers.items()}
        self.body: Any = None
        self.body_ok = True
        if raw:
            try:
                self.body = json.loads(raw)
            except ValueError:
                self.body_ok = False
        self.family = _family(path, self.headers)
        if self.sent_path != path and self.family != "openai":
            self.family = _family(self.sent_path, self.headers)  # a path outside the prefix
        self.key_index = self._resolve_key()
        self.number = self.sim._next_number()
        self.answered = False

    @property
    def request_id(self) -> str:
        return f"req_sim_{self.number}"

    def _resolve_key(self) -> int | None:
        if self.family == "openai":
            scheme, _, value = self.headers.get("authorization", "").partition(" ")
            presented = value.strip() if scheme.lower() == "bearer" else ""
        else:
            presented = self.headers.get("x-api-key", "")
        keys = self.sim.keys
        return keys.index(presented) if presented in keys else None

    def _redacted_headers(self) -> dict[str, str]:
        redacted: dict[str, str] = {}
        for name, value in self.headers.items():
            if name in _SECRET_HEADERS:
                value = _REDACTED
            else:
                for key in self.sim.keys:
                    if key and key in value:
                        value = value.replace(key, _REDACTED)
            redacted[name] = value
        return redacted

    def _record(self, status: int | None) -> None:
        if self.answered:
            raise RuntimeError("request answered twice")
        self.answered = True
        self.sim._record(
            RecordedRequest(
                self.sent_path, self.key_index, self._redacted_headers(), self.body, status, self.method
            )
        )

    def _send_head(self, status: int, headers: Mapping[str, str]) -> None:
        handler = self.handler
        handler.send_response(status)
        id_header = "x-request-id" if self.family == "openai" else "request-id"
        handler.send_header(id_header, self.request_id)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.end_headers()

    def send_bytes(
        self,
        status: int,
        payload: bytes,
        headers: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        """Answer with a fixed-length body, keeping the connection open."""
        self._record(status)
        all_headers = {"content-type": content_type, "content-length": str(len(payload))}
        all_headers.update(headers or {})
        self._send_head(status, all_headers)
        if payload:
            self.handler.wfile.write(payload)

    def send_json(
        self, status: int, payload: Any, headers: Mapping[str, str] | None = None
    ) -> None:
        """Answer with a JSON document (or raw bytes passed through)."""
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_bytes(status, data, headers)

    def send_error(
        self,
        status: int,
        message: str | None = None,
        *,
        error_type: str | None = None,
        code: Any = DEFAULT,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer with the family's error shape for ``status``."""
        if self.family == "openai":
            body = openai_error(status, message, error_type=error_type, code=code, param=param)
        else:
            body = anthropic_error(
                status, message, error_type=error_type, request_id=self.request_id
            )
        self.send_json(status, body, headers)

    def start_stream(self, headers: Mapping[str, str] | None = None) -> None:
        """Begin a 200 server-sent-event stream using chunked encoding."""
        self._record(200)
        all_headers = {
            "content-type": "text/event-stream; charset=utf-8",
            "cache-control": "no-cache",
            "transfer-encoding": "chunked",
        }
        all_headers.update(headers or {})
        self._send_head(200, all_headers)

    def write_chunk(self, data: bytes) -> None:
        """Write one chunk of a chunked body."""
        if data:
            self.handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def sse(self, event: str | None, data: Any) -> None:
        """Write one server-sent event (``event:`` line only when named)."""
        text = data if isinstance(data, str) else json.dumps(data)
        prefix = f"event: {event}\n" if event else ""
        self.write_chunk(f"{prefix}data: {text}\n\n".encode())

    def end_stream(self) -> None:
        """Write the chunked terminator; the connection stays reusable."""
        self.handler.wfile.write(b"0\r\n\r\n")

    def abort(self) -> None:
        """Drop the connection mid-body, as a failing proxy would."""
        self.handler.close_connection = True

    def take_stream_fault(self) -> Fault | None:
        """Claim the oldest pending mid-stream fault for this request, if any."""
        return self.sim._faults.take(self.path, self.key_index, in_stream=True)


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


def _family(path: str, headers: Mapping[str, str]) -> str:
    if path.startswith(_OPENAI_PREFIXES):
        return "openai"
    if path == "/v1/models" and "authorization" in headers and "x-api-key" not in headers:
        return "openai"
    return "anthropic"


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
    else:  # pragma: no cover - stream faults never match here
        raise AssertionError(f"unexpected fault kind {fault.kind}")
