"""One request in flight and the helpers that answer it exactly once.

The endpoint simulations (:mod:`.anthropic_api`, :mod:`.openai_api`) take an
:class:`Exchange`; the request handler (:mod:`.handler`) builds one per request.
This module sits below both, and reaches the handler and the simulator only
through the protocols of :mod:`.protocols`.  Every answer is recorded before
its first byte is written, so a test that has its response can already see the
recording.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from .error_bodies import DEFAULT, anthropic_error, openai_error
from .faults import Fault
from .protocols import ExchangeHandler, SimulatorState
from .recording import RecordedRequest

__all__ = ["Exchange"]

_SECRET_HEADERS = frozenset({"x-api-key", "authorization", "api-key"})
_OPENAI_PREFIXES = ("/v1/chat/", "/v1/completions", "/v1/embeddings", "/v1/responses")
_REDACTED = "***"
# Usage figures by their Anthropic names, as OpenAI calls them.
_OPENAI_USAGE = {"input_tokens": "prompt_tokens", "output_tokens": "completion_tokens"}


class Exchange:
    """One request in flight, with helpers that answer it exactly once."""

    def __init__(
        self,
        handler: ExchangeHandler,
        method: str,
        path: str,
        raw: bytes,
        sent_path: str | None = None,
    ) -> None:
        self.handler = handler
        self.sim: SimulatorState = handler.server.simulator
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
        self.extra_headers: dict[str, str] = {}
        """Added to (and overriding) the answer's headers: set by answer faults."""
        self.usage_override: dict[str, Any] = {}
        """Usage figures (Anthropic names) the answer reports instead of the true ones."""
        self.write_body: Callable[[bytes], object] = handler.wfile.write
        """Where body bytes go (a wire fault may slow them down)."""

    @property
    def request_id(self) -> str:
        return f"req_sim_{self.number}"

    def _resolve_key(self) -> int | None:
        presented = self.presented_key()
        keys = self.sim.keys
        return keys.index(presented) if presented in keys else None

    def presented_key(self) -> str:
        """The key the request carried, as sent ("" if none)."""
        if self.family == "openai":
            scheme, _, value = self.headers.get("authorization", "").partition(" ")
            return value.strip() if scheme.lower() == "bearer" else ""
        return self.headers.get("x-api-key", "")

    def usage(self, figures: Mapping[str, Any]) -> dict[str, Any]:
        """``figures`` with any usage fault's values in place of the true ones."""
        names = _OPENAI_USAGE if self.family == "openai" else {}
        override = {names.get(name, name): value for name, value in self.usage_override.items()}
        return {name: override.get(name, value) for name, value in figures.items()}

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
        for name, value in {**headers, **self._organization(), **self.extra_headers}.items():
            handler.send_header(name, value)
        handler.end_headers()

    def _organization(self) -> dict[str, str]:
        """Which organisation answered, as the providers say it: the group's
        name for a grouped key, else ``org-key-<index>``; nothing for a key
        the simulator does not know."""
        if self.key_index is None:
            return {}
        scope = self.sim._scope_name(self.key_index)
        org = scope[len("group:"):] if scope.startswith("group:") else f"org-key-{self.key_index}"
        org = self.sim.organization_prefix + org
        name = "openai-organization" if self.family == "openai" else "anthropic-organization-id"
        return {name: org}

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
            self.write_body(payload)

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
            self.write_body(b"%x\r\n%s\r\n" % (len(data), data))

    def sse(self, event: str | None, data: Any) -> None:
        """Write one server-sent event (``event:`` line only when named)."""
        text = data if isinstance(data, str) else json.dumps(data)
        prefix = f"event: {event}\n" if event else ""
        self.write_chunk(f"{prefix}data: {text}\n\n".encode())

    def end_stream(self) -> None:
        """Write the chunked terminator; the connection stays reusable."""
        self.write_body(b"0\r\n\r\n")

    def abort(self) -> None:
        """Drop the connection mid-body, as a failing proxy would."""
        self.handler.close_connection = True

    def take_stream_fault(self) -> Fault | None:
        """Claim the oldest pending mid-stream fault for this request, if any."""
        return self.sim._faults.take(self.path, self.key_index, in_stream=True)


def _family(path: str, headers: Mapping[str, str]) -> str:
    if path.startswith(_OPENAI_PREFIXES):
        return "openai"
    if path == "/v1/models" and "authorization" in headers and "x-api-key" not in headers:
        return "openai"
    return "anthropic"
