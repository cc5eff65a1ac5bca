"""The provider simulator: a local Anthropic + OpenAI look-alike on one port.

Users test their own code against it, the integration tests use it and the
``llm-sync demo`` command runs against it offline, so it must behave like the
real providers (auth, validation, rate limits per organisation and model
class, streaming, failures)
while staying deterministic and never exposing a key.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

from .cache import DEFAULT_MIN_TOKENS, PromptCache
from .faults import Fault, FaultKind, FaultQueue
from .handler import SimServer
from .limits import KeyLimiter, ScopeLimiter, SimLimits
from .recording import RecordedRequest
from .replies import default_reply

__all__ = ["ReplyFunction", "Simulator"]

ReplyFunction = Callable[[list[dict[str, Any]]], str]
Clock = Callable[[], float]
_POLL_INTERVAL = 0.02


class Simulator:
    """Serves ``/v1/messages``, ``/v1/messages/count_tokens``, ``/v1/chat/completions``
    and ``GET /v1/models`` from a background thread; every key is valid for both APIs.

    ``path_prefix`` serves every route under another prefix in place of
    ``/v1``: ``"/v1beta/openai"`` (Gemini's compatibility API) answers
    ``/v1beta/openai/chat/completions``, ``"/openai"`` (Azure-style)
    ``/openai/chat/completions``, ``"/anthropic/v1"`` (a gateway)
    ``/anthropic/v1/messages``; paths outside it get 404. Recordings keep
    the path as sent; faults match the ``/v1/...`` route.

    ``keys`` may also be a single string (one key).  Use as a context
    manager (``with Simulator() as sim:``) or call
    :meth:`start` / :meth:`stop`.  ``clock`` (monotonic seconds) drives the
    rate-limit buckets and ``wall_clock`` (POSIX seconds) the timestamps, so
    tests can inject fake clocks and move time by hand.

    Beyond text (see :mod:`.tools`, :mod:`.blocks`, :mod:`.cache`): both
    kinds accept images, documents, tools and tool results in their native
    shapes (malformed ones and tool results that answer no call get a 400),
    and count them in input tokens. Markers in the last user turn script
    the answer: ``CALL:name{json}`` (tool calls, several in parallel),
    ``REFUSE`` (a refusal), ``THINK`` (reasoning) and ``BADJSON`` (the
    structured answer is invalid once); a forced ``tool_choice`` or an OpenAI
    ``response_format`` json_schema is answered with input generated from
    the schema. Prompt caching follows each provider: Anthropic
    ``cache_control`` breakpoints, OpenAI automatic prefixes; prefixes
    shorter than ``cache_min_tokens`` (1024, as on real models) are never
    cached, and Anthropic cache reads are not charged to the
    input-tokens-per-minute bucket.

    Rate limits are kept per *scope* and *model class*, as the providers do
    (per organisation, per model). By default each key is its own scope;
    ``groups={"acme": [0, 1], "beta": [2, 3]}`` (or :meth:`set_group`) makes
    keys members of an organisation: they share one set of buckets (so one
    429 state) and one prompt cache. Every answer names the organisation
    that answered, as the providers do (``anthropic-organization-id`` on
    Anthropic routes, ``openai-organization`` on OpenAI's): the group's name
    for a grouped key, else ``org-key-<index>``, after ``organization_prefix``
    (give each simulator its own when their clients share a Redis backend:
    an organisation's limits are shared by name). ``set_limits(scope, SimLimits(...),
    models=["claude-opus-*"])`` declares a model class: models matching any of
    its ``fnmatch`` patterns share one set of buckets with those limits.
    Models no class matches use the scope's default limits (``limits``, or
    :meth:`set_limits` without ``models``): with ``per_model=True`` each model
    name gets buckets of its own, as on the real APIs; by default (as before
    classes existed) they share one set. Both header families report the
    figures of the set a request was charged to, and a 429 for one class or
    model leaves the others untouched.
    :meth:`bucket_levels` reads a scope's levels for a model. Scopes are named
    by a key index (a grouped key stands for its group) or a group name::

        sim = Simulator(keys=("k0", "k1", "k2"), groups={"acme": [0, 1]}, per_model=True)
        sim.set_limits("acme", SimLimits(input_tokens_per_minute=10_000))
        sim.set_limits("acme", SimLimits(requests_per_minute=5), models=["claude-opus-*"])
        sim.bucket_levels(1, model="claude-opus-4")  # acme's opus buckets
    """

    def __init__(
        self,
        keys: Sequence[str] = ("sk-sim-1",),
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
        limits: SimLimits | Sequence[SimLimits | None] | None = None,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
        path_prefix: str = "/v1",
        cache_min_tokens: int = DEFAULT_MIN_TOKENS,
        groups: Mapping[str, Sequence[int]] | None = None,
        per_model: bool = False,
        organization_prefix: str = "",
    ) -> None:
        keys = (keys,) if isinstance(keys, str) else tuple(keys)
        if not all(isinstance(key, str) and key for key in keys):
            raise ValueError("keys must be non-empty strings")
        if len(set(keys)) != len(keys):
            raise ValueError("keys must be distinct")
        if latency < 0:
            raise ValueError("latency must not be negative")
        if not path_prefix.startswith("/") or path_prefix.endswith("/") or " " in path_prefix:
            raise ValueError("path_prefix must start with '/' and not end with one, like '/v1beta/openai'")
        self.path_prefix = path_prefix
        self._keys = keys
        self._host = host
        self._port = port
        self.latency = latency
        """Seconds to wait before answering each request (real time)."""
        self._clock = clock
        self._wall_clock = wall_clock
        self._lock = threading.Lock()
        self._recordings: list[RecordedRequest] = []
        self._faults = FaultQueue()
        self._reply_function: ReplyFunction | None = None
        self._counter = 0
        self._per_model = per_model
        self.organization_prefix = organization_prefix
        self._key_scopes = [
            ScopeLimiter(item, clock, wall_clock, per_model=per_model) for item in self._per_key(limits)
        ]
        self._groups: dict[str, ScopeLimiter] = {}
        self._members: dict[str, tuple[int, ...]] = {}
        self._group_of: dict[int, str] = {}
        self._prompt_cache = PromptCache(clock, cache_min_tokens)
        self._bad_json_seen: set[str] = set()
        self._server: SimServer | None = None
        self._thread: threading.Thread | None = None
        for name, members in (groups or {}).items():
            self.set_group(name, members)

    def _per_key(
        self, limits: SimLimits | Sequence[SimLimits | None] | None
    ) -> list[SimLimits | None]:
        if limits is None or isinstance(limits, SimLimits):
            return [limits] * len(self._keys)
        per_key = list(limits)
        if len(per_key) != len(self._keys):
            raise ValueError(f"limits has {len(per_key)} entries for {len(self._keys)} keys")
        if not all(item is None or isinstance(item, SimLimits) for item in per_key):
            raise TypeError("limits entries must be SimLimits or None")
        return per_key

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> Simulator:
        """Bind the port and serve in a daemon thread (no-op if already running)."""
        with self._lock:
            if self._server is not None:
                return self
            server = SimServer((self._host, self._port), self)
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": _POLL_INTERVAL},
                name=f"llm-sync-simulator:{server.server_address[1]}",
                daemon=True,
            )
            thread.start()
            self._server, self._thread = server, thread
        return self

    def stop(self) -> None:
        """Shut the server down, sever open connections and join the thread (idempotent)."""
        with self._lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
        if server is None or thread is None:
            return
        server.shutdown()
        server.server_close()
        server.close_connections()
        thread.join()

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"port={self.port}" if self.running else "stopped"
        return f"<Simulator {state} keys={len(self._keys)}>"

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        """The bound TCP port (only known once started)."""
        server = self._server
        if server is None:
            raise RuntimeError("the simulator is not running; call start() first")
        return int(server.server_address[1])

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT`` of the running simulator, without a trailing slash."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    @property
    def api_url(self) -> str:
        """``base_url`` + ``path_prefix``: the ``base_url`` for an OpenAI-kind endpoint."""
        return self.base_url + self.path_prefix

    @property
    def keys(self) -> tuple[str, ...]:
        """The accepted API keys; recordings refer to them by index only."""
        return self._keys

    @property
    def connection_count(self) -> int:
        """TCP connections accepted so far (shows whether clients reuse connections)."""
        server = self._server
        return server.accepted if server is not None else 0

    # -- recordings ----------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Snapshot of every answered request, oldest first."""
        with self._lock:
            return list(self._recordings)

    def request_count(self, path: str | None = None, key_index: int | None = None) -> int:
        """How many recorded requests match ``path`` and ``key_index`` (None = any)."""
        return sum(
            1
            for item in self.requests
            if (path is None or item.path == path)
            and (key_index is None or item.key_id == key_index)
        )

    def stats(self) -> dict[int | None, dict[int, int]]:
        """Responses sent per key index (None = unknown key), by status.

        200 and 429 are always listed, so ``stats()[0][429]`` needs no ``.get``.
        """
        counts: dict[int | None, dict[int, int]] = {
            index: {200: 0, 429: 0} for index in range(len(self._keys))
        }
        for item in self.requests:
            if item.status is not None:
                per_status = counts.setdefault(item.key_id, {200: 0, 429: 0})
                per_status[item.status] = per_status.get(item.status, 0) + 1
        return counts

    def reset(self) -> None:
        """Forget recordings, the prompt cache and ``BADJSON`` prompts seen,
        drop pending faults and refill every bucket (limits and groups stay)."""
        self._prompt_cache.clear()
        with self._lock:
            self._bad_json_seen.clear()
            self._recordings.clear()
            scopes = [*self._key_scopes, *self._groups.values()]
        for scope in scopes:
            scope.refill()
        self._faults.clear()

    # -- behaviour -----------------------------------------------------------------

    def set_reply(self, function: ReplyFunction | None) -> None:
        """Script answers: ``function(messages) -> str`` replaces the default reply.

        It receives the request's ``messages`` list as sent (Anthropic's
        top-level ``system`` is not included); ``None`` restores the default.
        """
        with self._lock:
            self._reply_function = function

    def set_limits(
        self,
        scope: int | str,
        limits: SimLimits | None,
        *,
        models: str | Sequence[str] | None = None,
    ) -> None:
        """Replace the limits of one key (an index) or group (a name); the
        affected buckets start full.

        Without ``models``: the default limits, for the models no class
        matches (a set of buckets each with ``per_model``, else one shared). With ``models`` (``fnmatch``
        patterns, or one pattern): the limits of the model class those
        patterns name, shared by every model matching any of them; classes
        are tried in the order first declared, and declaring the same
        patterns again replaces that class's limits (``None``: unlimited).
        A key that belongs to a group has no limits of its own: set the
        group's (``ValueError``).
        """
        patterns = _patterns(models)
        self._scope(scope, for_limits=True).set_limits(limits, patterns)

    def set_group(self, name: str, key_indices: Sequence[int]) -> None:
        """Make ``key_indices`` the members of group ``name`` (an organisation).

        The members share the group's buckets and prompt cache, and leave any
        group they were in (a group left empty is dropped). A new group starts
        with the limits and model classes of its first member, its buckets
        full; an existing group keeps its limits and levels. An empty
        ``key_indices`` dissolves the group: its keys use their own limits
        (and buckets) again.
        """
        if not isinstance(name, str) or not name:
            raise ValueError("a group name must be a non-empty string")
        members = tuple(dict.fromkeys(key_indices))
        for index in members:
            if isinstance(index, bool) or not isinstance(index, int):
                raise TypeError(f"key indices must be ints, got {index!r}")
            self._check_index(index)
        with self._lock:
            for index in self._members.pop(name, ()):
                self._group_of.pop(index, None)
            scope = self._groups.pop(name, None)
            for index in members:
                old = self._group_of.pop(index, None)
                if old is not None:
                    self._members[old] = tuple(item for item in self._members[old] if item != index)
                    if not self._members[old]:
                        del self._members[old], self._groups[old]
            if not members:
                return
            if scope is None:
                scope = self._key_scopes[members[0]].copy_config()
            self._groups[name] = scope
            self._members[name] = members
            for index in members:
                self._group_of[index] = name

    @property
    def per_model(self) -> bool:
        """Whether each model no class matches has buckets of its own (else they share one set)."""
        return self._per_model

    @property
    def groups(self) -> dict[str, tuple[int, ...]]:
        """Each group's member key indices."""
        with self._lock:
            return dict(self._members)

    def bucket_levels(
        self, scope: int | str, api: str = "anthropic", *, model: str | None = None
    ) -> dict[str, float]:
        """Current level of each configured bucket ``model`` is charged to, in
        one key's scope (an index: its group's if it has one) or a group's
        (a name), for ``api``.

        Anthropic buckets: ``requests``, ``input_tokens``, ``output_tokens``;
        OpenAI buckets: ``requests``, ``tokens``.  Unconfigured figures are absent.
        Without ``model``: the default buckets (those shared by the models no
        class matches; with ``per_model``, those of the one such model charged
        here, ``ValueError`` if several were); full default buckets if unused.
        """
        return self._scope(scope).levels(api, model)

    # -- faults --------------------------------------------------------------------

    def inject(
        self,
        status: int = 529,
        *,
        count: int = 1,
        key_index: int | None = None,
        path: str | None = None,
        headers: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | bytes | None = None,
        delay: float = 0.0,
    ) -> None:
        """Answer the next ``count`` matching requests with ``status``.

        The body is the provider-appropriate error for the status unless
        ``body`` (a dict or raw bytes) is given; only the given ``headers`` are
        added (no automatic retry-after).  ``delay`` waits before answering.
        """
        if not isinstance(status, int) or not 100 <= status <= 599:
            raise ValueError(f"status must be an HTTP status code, got {status!r}")
        self._add(
            FaultKind.STATUS, count, key_index, path,
            status=status, headers=dict(headers or {}), body=body, delay=delay,
        )

    def inject_quota_exceeded(
        self, *, count: int = 1, key_index: int | None = None, path: str | None = None
    ) -> None:
        """Answer with the provider's out-of-credit 429 (no retry-after: retrying is futile)."""
        self._add(FaultKind.QUOTA_EXCEEDED, count, key_index, path, status=429)

    def inject_stream_error(
        self,
        after_chunks: int = 2,
        *,
        count: int = 1,
        key_index: int | None = None,
        path: str | None = None,
    ) -> None:
        """After ``after_chunks`` text deltas, send an error event and end the stream."""
        self._add(FaultKind.STREAM_ERROR, count, key_index, path, after_chunks=after_chunks)

    def inject_truncated_stream(
        self,
        after_chunks: int = 2,
        *,
        count: int = 1,
        key_index: int | None = None,
        path: str | None = None,
    ) -> None:
        """After ``after_chunks`` text deltas, close the connection without a terminator."""
        self._add(FaultKind.TRUNCATED_STREAM, count, key_index, path, after_chunks=after_chunks)

    def inject_invalid_json(
        self, *, count: int = 1, key_index: int | None = None, path: str | None = None
    ) -> None:
        """Answer 200 with a JSON body cut in half."""
        self._add(FaultKind.INVALID_JSON, count, key_index, path)

    def inject_disconnect(
        self, *, count: int = 1, key_index: int | None = None, path: str | None = None
    ) -> None:
        """Close the connection without answering."""
        self._add(FaultKind.DISCONNECT, count, key_index, path)

    def inject_redirect(
        self,
        location: str,
        *,
        status: int = 302,
        count: int = 1,
        key_index: int | None = None,
        path: str | None = None,
    ) -> None:
        """Answer with a redirect to ``location`` (clients should not follow it blindly)."""
        if status not in (301, 302, 303, 307, 308):
            raise ValueError(f"status must be a redirect status, got {status}")
        self._add(FaultKind.REDIRECT, count, key_index, path, status=status, location=location)

    def inject_interim(
        self,
        status: int = 103,
        *,
        headers: Mapping[str, str] | None = None,
        count: int = 1,
        key_index: int | None = None,
        path: str | None = None,
    ) -> None:
        """Send an interim ``1xx`` response (``103 Early Hints``) before the
        answer of the next ``count`` matching requests."""
        if not isinstance(status, int) or not 100 <= status <= 199 or status == 101:
            raise ValueError(f"status must be an interim 1xx status other than 101, got {status!r}")
        headers = dict(headers if headers is not None else {"link": "</style.css>; rel=preload"})
        self._add(FaultKind.INTERIM, count, key_index, path, status=status, headers=headers)

    def inject_trickle(
        self,
        chunk_size: int = 1,
        interval: float = 0.05,
        *,
        stall_after: int | None = None,
        count: int = 1,
        key_index: int | None = None,
        path: str | None = None,
    ) -> None:
        """Send the body of the next ``count`` matching answers (plain or
        streamed) ``chunk_size`` bytes every ``interval`` seconds; with
        ``stall_after``, go silent after that many body bytes until the
        client hangs up. The head is sent at once."""
        self._add(FaultKind.TRICKLE, count, key_index, path,
                  chunk_size=chunk_size, interval=interval, stall_after=stall_after)

    def inject_stall(
        self, after_bytes: int, *, count: int = 1, key_index: int | None = None, path: str | None = None
    ) -> None:
        """Send the first ``after_bytes`` of the body, then nothing more
        until the client hangs up (a server that hangs half-way)."""
        self.inject_trickle(1 << 20, 0.0, stall_after=after_bytes, count=count, key_index=key_index, path=path)

    def inject_headers(
        self,
        headers: Mapping[str, str],
        *,
        count: int = 1,
        key_index: int | None = None,
        path: str | None = None,
    ) -> None:
        """Answer the next ``count`` matching requests as usual, plus ``headers``
        (overriding the simulator's own): absurd rate-limit figures, say
        ``{"anthropic-ratelimit-requests-limit": "0.0001"}``."""
        self._add(FaultKind.HEADERS, count, key_index, path, headers=dict(headers))

    def inject_usage(
        self,
        usage: Mapping[str, Any],
        *,
        count: int = 1,
        key_index: int | None = None,
        path: str | None = None,
    ) -> None:
        """Answer as usual, but report ``usage`` (``input_tokens`` and/or
        ``output_tokens``, any JSON value: ``10**15``, ``-1``, ``"many"``) in place
        of the true figures; for OpenAI they become ``prompt_tokens`` and
        ``completion_tokens``.  The key's buckets are charged the true amounts."""
        unknown = set(usage) - {"input_tokens", "output_tokens"}
        if unknown:
            raise ValueError(f"usage takes input_tokens and output_tokens, not {sorted(unknown)}")
        self._add(FaultKind.USAGE, count, key_index, path, usage=dict(usage))

    def inject_echo_key(
        self,
        header: str = "x-echo-key",
        *,
        status: int = 200,
        count: int = 1,
        key_index: int | None = None,
        path: str | None = None,
    ) -> None:
        """Echo the key the request presented in response header ``header``:
        on the usual answer (``status=200``), or on an error answer of
        ``status`` whose body's ``request_id`` echoes it too.  Clients must
        never show it (in errors, their headers, reprs, pickles or logs)."""
        if not isinstance(status, int) or not 200 <= status <= 599:
            raise ValueError(f"status must be 200 or an error status, got {status!r}")
        self._add(FaultKind.ECHO_KEY, count, key_index, path, status=status, echo_header=header)

    def pending_faults(self) -> list[Fault]:
        """Snapshot of the faults not yet used up, in firing order."""
        return self._faults.pending()

    def clear_faults(self) -> None:
        """Drop every pending fault."""
        self._faults.clear()

    def _add(
        self,
        kind: FaultKind,
        count: int,
        key_index: int | None,
        path: str | None,
        **details: Any,
    ) -> None:
        if key_index is not None:
            self._check_index(key_index)
        self._faults.add(Fault(kind, count=count, key_index=key_index, path=path, **details))

    # -- used by the request handler -------------------------------------------------

    def _check_index(self, key_index: int) -> None:
        if not 0 <= key_index < len(self._keys):
            raise IndexError(f"key_index {key_index} out of range for {len(self._keys)} keys")

    def _next_number(self) -> int:
        with self._lock:
            self._counter += 1
            return self._counter

    def _record(self, item: RecordedRequest) -> None:
        with self._lock:
            self._recordings.append(item)

    def _scope(self, scope: int | str, *, for_limits: bool = False) -> ScopeLimiter:
        """The limits of a key index (its group's, unless ``for_limits``) or group name."""
        if isinstance(scope, str):
            with self._lock:
                found = self._groups.get(scope)
            if found is None:
                raise KeyError(f"no group named {scope!r}")
            return found
        if isinstance(scope, bool) or not isinstance(scope, int):
            raise TypeError(f"a scope is a key index or a group name, got {scope!r}")
        self._check_index(scope)
        with self._lock:
            group = self._group_of.get(scope)
            if group is None:
                return self._key_scopes[scope]
            if for_limits:
                raise ValueError(f"key {scope} belongs to group {group!r}: set the group's limits")
            return self._groups[group]

    def _scope_name(self, key_index: int) -> str:
        """Who a key's usage counts for: ``group:NAME`` or ``key:INDEX`` (the cache's scope)."""
        with self._lock:
            group = self._group_of.get(key_index)
        return f"group:{group}" if group is not None else f"key:{key_index}"

    def _limiter(self, key_index: int, model: str) -> KeyLimiter:
        """The buckets a request with this key for ``model`` is charged to."""
        return self._scope(key_index).for_model(model)

    def _bad_json_once(self, prompt: str) -> bool:
        """True the first time a ``BADJSON`` prompt text is seen (its answer is invalid)."""
        with self._lock:
            if prompt in self._bad_json_seen:
                return False
            self._bad_json_seen.add(prompt)
            return True

    def _reply(self, messages: list[dict[str, Any]]) -> str:
        with self._lock:
            function = self._reply_function
        reply = function(messages) if function is not None else default_reply(messages)
        if not isinstance(reply, str):
            raise TypeError(f"reply function returned {type(reply).__name__}, not str")
        return reply


def _patterns(models: str | Sequence[str] | None) -> tuple[str, ...] | None:
    if models is None:
        return None
    patterns = (models,) if isinstance(models, str) else tuple(models)
    if not patterns or not all(isinstance(item, str) and item for item in patterns):
        raise ValueError("models must be one or more non-empty fnmatch patterns")
    return patterns
