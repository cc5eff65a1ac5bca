"""What one process knows about one key and one scope beyond the buckets.

A *scope* is what a provider limits as one: a key, or a group of keys of
one organisation, times a model class (the models a ``rate_limits`` entry
with ``models`` names, or else one model name). Its buckets live in a
backend (see ``backends``), shared or not, under :func:`scope_id`. A
:class:`Scope` keeps the per-process part: calls reserved but unsent and in
flight, whether the scope has answered yet (probing). It also turns the
server's headers into :class:`~llm_sync.ratelimit.state.Observation`
values, because the bound they give depends on those local calls (and the
headers describe the scope's buckets, so these counts are per scope, not
per key). A :class:`KeyLimiter` keeps what belongs to the key: its owner
(the key itself or its group), the calibration of the input estimate,
what it warned about. No lock of their own, no reference to the limiter
that owns them.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Protocol

from ..config import RateLimitConfig
from .headers import DIMENSIONS, HeaderLimit
from .state import CONFIG_FIELDS, Observation, ScopeSnapshot

__all__ = ["Cost", "Reservation", "KeyLimiter", "Scope", "scope_id", "key_id", "PROBE_IN_FLIGHT", "TRANSIT_MARGIN",
           "CALIBRATION_WEIGHT"]

# Before a key without configured limits has answered once, this many of
# its calls may be in flight: enough to learn the limits quickly, too few
# to blast a strict server.
PROBE_IN_FLIGHT = 2
# The input-token estimate is calibrated against actual usage with this
# weight per observation (exponential moving average).
CALIBRATION_WEIGHT = 0.2
# ... and kept within this range: one odd answer (a prompt served from the
# cache, say) must not make every later estimate absurd.
CALIBRATION_RANGE = (0.25, 4.0)
# A call reaches the server a little after we admit it. While a bucket sits
# full, refill is wasted, and the server's bucket stays full that much
# longer than ours: from then on it runs ``rate * transit`` behind our view.
# So a call is admitted only when its bucket also covers this many seconds
# of refill. A one-off delay, not a lower rate. (Measured: without it, ~1 in
# 7 runs of the demo drew a 429 at a bucket's edge under CPU load.)
TRANSIT_MARGIN = 0.1


@dataclass(frozen=True)
class Cost:
    """What a call needs: its input-token estimate and its ``max_tokens``,
    and the model it names (which scope of its key it is charged to; empty:
    the limiter's default model)."""

    input_tokens: int
    output_tokens: int
    model: str = ""

    def input_for(self, scope: str) -> int:
        """The input estimate to charge on ``scope`` (a prompt-cache aware
        cost charges less where that scope has the prompt's prefix cached)."""
        return self.input_tokens


def key_id(secret: str) -> str:
    """A key's name for its own buckets, the same in every process that
    holds the key (so a shared backend shares them), and no clue to the
    key: a hash of it."""
    return "key:" + hashlib.sha256(b"llm_sync key\0" + secret.encode("utf-8")).hexdigest()[:24]


def scope_id(owner: str, model_class: str) -> str:
    """The backend's name for the buckets of ``owner`` (a key's client id,
    or ``endpoint:group``) and ``model_class`` (a class's name or a model
    name; empty: the owner's only scope, as before classes existed)."""
    return f"{owner}|{model_class}" if model_class else owner


class Scope:
    """One scope's local bookkeeping (shared by every key of a group).
    Only touched under the owning ProviderLimiter's lock."""

    def __init__(self, owner: str, model_class: str, config: Optional[RateLimitConfig], *,
                 refunds_output: bool) -> None:
        self.id = scope_id(owner, model_class)
        self.owner = owner
        self.model_class = model_class
        self.refunds_output = refunds_output
        self.configured = config_limits(config)
        self.burst_seconds = config.burst_seconds if config else None
        self.declared = False  # in the backend (declare is idempotent)
        self.unsent = dict.fromkeys(DIMENSIONS, 0.0)  # reserved, not yet sent
        self.outstanding = dict.fromkeys(DIMENSIONS, 0.0)  # reserved, not yet settled
        self.in_flight = 0
        # Until the scope's first answer, only PROBE_IN_FLIGHT calls go out:
        # even configured limits may be stricter at the server than stated.
        self.answered = False

    def __repr__(self) -> str:
        return f"<Scope {self.id} in_flight={self.in_flight}>"

    @property
    def probing(self) -> bool:
        return not self.answered

    @property
    def unsent_calls(self) -> int:
        return int(round(self.unsent["requests"]))

    @property
    def probe_full(self) -> bool:
        """Probing, with every probe slot taken: wait for the first answer."""
        return self.probing and self.in_flight + self.unsent_calls >= PROBE_IN_FLIGHT

    def hold(self, amounts: Mapping[str, float], sign: float = 1.0) -> None:
        """Count a reservation as unsent and outstanding (``sign=-1``: undo)."""
        for dimension, amount in amounts.items():
            self.unsent[dimension] += sign * amount
            self.outstanding[dimension] += sign * amount

    def forget_calls(self) -> None:
        """Nothing reserved or in flight (a forked child)."""
        self.in_flight = 0
        self.unsent = dict.fromkeys(DIMENSIONS, 0.0)
        self.outstanding = dict.fromkeys(DIMENSIONS, 0.0)

    def observations(self, reported: Mapping[str, HeaderLimit], since: float,
                     pending_refund: Optional[Mapping[str, float]] = None,
                     in_flight: Optional[Mapping[str, float]] = None) -> dict[str, Observation]:
        """The headers of one call, as the backend applies them.

        ``remaining`` describes the bucket when the server admitted *this*
        request, somewhere between its send and its answer (``since``
        seconds ago). Concurrent requests reach the server in any order, so
        the bound is an upper one: less what we reserved but have not sent,
        plus what the server will still refund of this call (Anthropic
        charges ``max_tokens`` of output until the reply ends). On the key's
        first answer the bound is exact instead: the other calls out are
        the few probes, so all of them are subtracted (``in_flight``: this
        call's amounts, when it is still out yet already in ``remaining``).
        Measured: assuming the server admitted it at the send instead
        pulls buckets 2-3k tokens too low in a 32-thread burst (9 % lost).
        """
        first_answer = not self.answered
        found = {}
        for dimension, header in reported.items():
            if dimension == "tokens" and self.refunds_output and dimension not in self.configured:
                continue  # Anthropic's combined figure is a summary, not a bucket
            others = self.outstanding[dimension] if first_answer else self.unsent[dimension]
            if first_answer and in_flight:
                others -= in_flight.get(dimension, 0.0)
            offset = others - (pending_refund or {}).get(dimension, 0.0)
            found[dimension] = Observation(header.limit, header.remaining, header.reset_in, since, offset)
        return found



class SendMarker(Protocol):
    """What a reservation's owner offers its holders (the limiter)."""

    def mark_sent(self, reservation: "Reservation") -> None: ...


@dataclass(eq=False)
class Reservation:
    """Charges made for one call on one key, in one of its scopes.
    ``limiter`` is the owner, for code that holds only the reservation and
    must mark it sent."""

    key: "KeyLimiter"
    limiter: SendMarker
    amounts: dict[str, float]
    estimate: int
    scope: Scope
    sent_at: Optional[float] = None
    done: bool = False
    # Set when this call's answer moved its key to its organisation's
    # scopes: that scope (this call's model class) and what the headers
    # say of it, for the limiter to charge and sync it too; and whether that
    # scope is new (it then takes over this scope's levels).
    moved: Optional[tuple[Scope, dict[str, Observation], bool]] = None
    # Where the backend took the charges (its admission's source): they are
    # corrected there, even if the backend has switched stores since.
    source: Any = None
    aliased: bool = False  # ... and on the organisation's scope it forwards to


def config_limits(config: Optional[RateLimitConfig]) -> dict[str, float]:
    """Configured per-minute limits by dimension (unset ones left out)."""
    if config is None:
        return {}
    return {d: float(getattr(config, name)) for d, name in CONFIG_FIELDS.items() if getattr(config, name)}


class KeyLimiter:
    """One key's local bookkeeping. Only touched under the owning
    ProviderLimiter's lock. ``owner`` names the buckets it draws on (its
    client id, or its group's id: keys of a group share them); ``home`` is
    its scope for the limiter's default model, which the attributes
    ``scope``, ``in_flight``, ``answered``, ``unsent``... describe."""

    def __init__(self, index: int, client_id: str, config: Optional[RateLimitConfig], *,
                 refunds_output: bool, owner: Optional[str] = None, home: Optional[Scope] = None,
                 grouped: bool = False) -> None:
        self.index = index
        self.client_id = client_id
        self.owner = owner or client_id
        # A configured group is never overridden by the organisation a
        # server names; an ungrouped key's owner may become that
        # organisation's (``endpoint:org:ID``) once it answers.
        self.grouped = grouped
        self.config = config
        self.refunds_output = refunds_output
        self.configured = config_limits(config)
        self.burst_seconds = config.burst_seconds if config else None
        self.home = home if home is not None else Scope(self.owner, "", config, refunds_output=refunds_output)
        self.warned: set[str] = set()  # what was logged once about this key's server
        self.calibration = 1.0
        self.last_chosen = -1

    def __repr__(self) -> str:
        return f"<KeyLimiter {self.client_id} in_flight={self.in_flight}>"

    # The default model's scope, as the key's own figures.
    @property
    def scope(self) -> str:
        return self.home.id

    @property
    def in_flight(self) -> int:
        return self.home.in_flight

    @in_flight.setter
    def in_flight(self, value: int) -> None:
        self.home.in_flight = value

    @property
    def answered(self) -> bool:
        return self.home.answered

    @answered.setter
    def answered(self, value: bool) -> None:
        self.home.answered = value

    @property
    def unsent(self) -> dict[str, float]:
        return self.home.unsent

    @property
    def outstanding(self) -> dict[str, float]:
        return self.home.outstanding

    @property
    def probing(self) -> bool:
        return self.home.probing

    @property
    def unsent_calls(self) -> int:
        return self.home.unsent_calls

    @property
    def probe_full(self) -> bool:
        return self.home.probe_full

    def calibrate(self, estimate: int, actual: int) -> None:
        """Move the estimate's scale toward what the provider counted."""
        if estimate > 0 and actual > 0:
            self.calibration += CALIBRATION_WEIGHT * (actual / estimate - self.calibration)
            self.calibration = min(CALIBRATION_RANGE[1], max(CALIBRATION_RANGE[0], self.calibration))

    def amounts(self, cost: Cost, scope: str = "") -> dict[str, float]:
        """What ``cost`` charges on ``scope`` of this key."""
        estimate = max(1.0, math.ceil(cost.input_for(scope) * self.calibration))
        return {
            "requests": 1.0,
            "input_tokens": estimate,
            "output_tokens": float(cost.output_tokens),
            "tokens": estimate + cost.output_tokens,
        }

    def status(self, snapshot: ScopeSnapshot, wall_now: float) -> Optional[dict[str, Any]]:
        """The status dict of this key, from its scope's snapshot."""
        buckets = snapshot.buckets
        if not buckets:
            return None
        remaining = {d: max(0, int(b.level)) for d, b in buckets.items()}
        token_figures = [remaining[d] for d in ("input_tokens", "output_tokens", "tokens") if d in remaining]
        full_in = max((b.full_in for b in buckets.values()), default=0.0)
        return {
            "requests_remaining": remaining.get("requests"),
            "input_tokens_remaining": remaining.get("input_tokens"),
            "output_tokens_remaining": remaining.get("output_tokens"),
            "tokens_remaining": min(token_figures) if token_figures else None,
            "reset_at": wall_now + max(full_in, snapshot.paused_for, 0.0),
            "limits": {CONFIG_FIELDS[d]: b.limit for d, b in buckets.items()},
            "burst_capacity": {CONFIG_FIELDS[d]: round(b.capacity, 1) for d, b in buckets.items()},
            "paused_for": round(snapshot.paused_for, 3),
            "learned": sorted(CONFIG_FIELDS[d] for d, b in buckets.items() if not b.configured),
            "calibration": round(self.calibration, 4),
        }
