"""The Redis backend against a real Redis (``$LLM_SYNC_TEST_REDIS``): the
same maths as the memory backend, atomic under threads and processes, keys
that expire and never name an API key, state shared between processes, and
the fail-open / fail-closed policies when Redis goes away (a dead port, a
proxy cut mid-run, ``CLIENT KILL``)."""

from __future__ import annotations

import logging
import multiprocessing
import threading
import uuid
from typing import Any, Mapping, Optional

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llm_sync.config import RateLimitConfig
from llm_sync.errors import LLMRateLimitError
from llm_sync.ratelimit.backends import MemoryBackend
from llm_sync.ratelimit.backends.base import BackendError
from llm_sync.ratelimit.backends.failover import FailoverBackend
from llm_sync.ratelimit.backends.redis_store import RedisBackend, redis_key
from llm_sync.ratelimit.key import key_id
from llm_sync.ratelimit.limiter import Cost, ProviderLimiter
from llm_sync.ratelimit.state import Observation, ScopeSnapshot
from redis_support import REDIS_URL, delete_prefix, needs_redis, redis_client, unique_prefix

pytestmark = needs_redis

LIMITS = {"requests": 60.0, "input_tokens": 6000.0, "output_tokens": 600.0}
CALL = {"requests": 1.0, "input_tokens": 100.0, "output_tokens": 10.0, "tokens": 110.0}


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def levels(snapshot: ScopeSnapshot) -> dict[str, tuple[float, float, float]]:
    return {d: (b.limit, b.capacity, b.level) for d, b in snapshot.buckets.items()}


def assert_same(a: ScopeSnapshot, b: ScopeSnapshot) -> None:
    assert set(a.buckets) == set(b.buckets)
    for dimension, left in a.buckets.items():
        right = b.buckets[dimension]
        for name in ("limit", "capacity", "level", "full_in"):
            assert getattr(left, name) == pytest.approx(getattr(right, name), rel=1e-9, abs=1e-6), (dimension, name)
        assert left.configured == right.configured
    assert a.paused_for == pytest.approx(b.paused_for, abs=1e-6)


# --- the same maths as the reference ---------------------------------------------
amount = st.floats(min_value=0, max_value=5000, allow_nan=False)
maybe = st.one_of(st.none(), st.floats(min_value=0, max_value=20000, allow_nan=False))
observation = st.builds(Observation, limit=st.one_of(st.none(), st.sampled_from([30.0, 60.0, 600.0, 6000.0])),
                        remaining=maybe, reset_in=st.one_of(st.none(), st.floats(0, 120)),
                        since=st.floats(0, 5), offset=st.floats(-500, 500))
dims = st.sampled_from(["requests", "input_tokens", "output_tokens", "tokens"])
operation = st.one_of(
    st.tuples(st.just("advance"), st.floats(0, 30)),
    st.tuples(st.just("admit"), st.dictionaries(dims, amount, min_size=1), st.booleans()),
    st.tuples(st.just("settle"), st.dictionaries(dims, st.floats(-3000, 3000)),
              st.dictionaries(dims, observation, max_size=2)),
    st.tuples(st.just("pause"), st.floats(0, 10)),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(limits=st.sampled_from([LIMITS, {}, {"requests": 30.0, "tokens": 900.0}]),
       burst=st.sampled_from([None, 1.0, 10.0]), operations=st.lists(operation, max_size=12))
def test_redis_runs_the_same_maths_as_the_memory_backend(limits: Mapping[str, float], burst: Optional[float],
                                                         operations: list[Any]) -> None:
    clock = FakeClock()
    prefix = unique_prefix()
    redis_backend = RedisBackend(REDIS_URL, prefix=prefix, clock=clock)
    memory = MemoryBackend(clock)
    try:
        for backend in (redis_backend, memory):
            backend.declare("s", limits, burst)
        for op in operations:
            if op[0] == "advance":
                clock.now += op[1]
                continue
            results = []
            for backend in (redis_backend, memory):
                if op[0] == "admit":
                    results.append(backend.admit([("s", op[1])], 0.1, take=op[2]))
                elif op[0] == "settle":
                    backend.settle("s", op[1], op[2])
                else:
                    backend.pause("s", op[1])
            if op[0] == "admit":
                left, right = results
                assert (left.best, left.granted) == (right.best, right.granted)
                assert left.quotes[0].wait == pytest.approx(right.quotes[0].wait, rel=1e-9, abs=1e-6)
                assert left.quotes[0].headroom == pytest.approx(right.quotes[0].headroom, rel=1e-9, abs=1e-6)
                assert left.quotes[0].oversize == right.quotes[0].oversize
            assert_same(redis_backend.snapshot("s"), memory.snapshot("s"))
    finally:
        redis_backend.close()
        delete_prefix(prefix)


SCRIPTED = [  # every branch of sync and adjust, in an order that leaves buckets part-used
    ("admit", {"requests": 10.0, "input_tokens": 2000.0}),
    ("settle", {}, {"requests": Observation(30.0, 29.0, 40.0, 0.5, 1.0)}),  # a lower limit: level scaled down
    ("advance", 3.0),
    ("settle", {}, {"requests": Observation(60.0, 55.0, 1.0, 0.2, 0.0)}),  # raised back; burst learned: 56
    ("settle", {}, {"requests": Observation(60.0, 57.0, 0.0, 0.0, 0.0)}),  # no reset: within tolerance, kept
    ("settle", {}, {"requests": Observation(60.0, 59.0, 0.0, 0.0, 0.0)}),  # no reset: capacity floor raised
    ("settle", {"input_tokens": 50000.0}, {}),  # a huge correction: debt capped
    ("advance", 10.0),
    ("settle", {"input_tokens": -300.0}, {"output_tokens": Observation(900.0, 100.0, 5.0, 1.0, 20.0)}),  # learned
    ("settle", {}, {"tokens": Observation(None, 50.0, None, 0.0, 0.0)}),  # no limit, no bucket: ignored
    ("pause", 4.0),
    ("advance", 1.5),
    ("admit", {"requests": 1.0, "output_tokens": 10.0}),
    ("advance", 5.0),
    ("admit", {"requests": 1.0, "output_tokens": 10.0}),
]


@pytest.mark.parametrize("burst", [None, 10.0])
def test_redis_follows_the_memory_backend_through_every_branch(prefix: str, burst: Optional[float]) -> None:
    clock = FakeClock()
    backends = [RedisBackend(REDIS_URL, prefix=prefix, clock=clock), MemoryBackend(clock)]
    for backend in backends:
        backend.declare("s", LIMITS, burst)
    for op in SCRIPTED:
        if op[0] == "advance":
            clock.now += op[1]
            continue
        results = []
        for backend in backends:
            if op[0] == "admit":
                results.append(backend.admit([("s", op[1])], 0.1, take=True))
            elif op[0] == "settle":
                backend.settle("s", op[1], op[2])
            else:
                backend.pause("s", op[1])
        if results:
            assert results[0].granted == results[1].granted
            assert results[0].quotes[0].wait == pytest.approx(results[1].quotes[0].wait, rel=1e-9, abs=1e-6)
        assert_same(backends[0].snapshot("s"), backends[1].snapshot("s"))


def test_admit_chooses_like_the_memory_backend_among_many_scopes(prefix: str) -> None:
    clock = FakeClock()
    backends = [RedisBackend(REDIS_URL, prefix=prefix, clock=clock), MemoryBackend(clock)]
    requests = [(f"s{i}", CALL) for i in range(4)]
    for backend in backends:
        for i in range(4):
            backend.declare(f"s{i}", {"requests": 60.0 * (i + 1)}, None)
        backend.pause("s3", 5)
    outcomes = [backend.admit(requests, 0.1, take=True, eligible=[True, True, False, True]) for backend in backends]
    assert outcomes[0].best == outcomes[1].best == 1  # s2 is not eligible, s3 paused: s1 has most headroom
    assert outcomes[0].granted and outcomes[1].granted
    for i in range(4):
        assert_same(backends[0].snapshot(f"s{i}"), backends[1].snapshot(f"s{i}"))
    assert outcomes[0].quotes[3].wait == pytest.approx(5.0)


def test_oversize_requests_are_named_and_never_taken(prefix: str) -> None:
    backend = RedisBackend(REDIS_URL, prefix=prefix, clock=FakeClock())
    backend.declare("s", {"input_tokens": 1000.0}, None)
    admission = backend.admit([("s", {"input_tokens": 5000.0})], 0.0, take=True)
    assert admission.best is None and not admission.granted
    assert admission.quotes[0].oversize == "input tokens (5000 > 1000)"
    assert backend.snapshot("s").buckets["input_tokens"].level == 1000.0


# --- atomic for threads and processes ----------------------------------------------
def _take_many(prefix: str, attempts: int, now: float) -> int:
    backend = RedisBackend(REDIS_URL, prefix=prefix, clock=lambda: now)
    backend.declare("s", {"requests": 50.0}, None)
    granted = sum(backend.admit([("s", {"requests": 1.0})], 0.0, take=True).granted for _ in range(attempts))
    backend.close()
    return granted


def test_admissions_from_many_threads_never_take_more_than_the_bucket(prefix: str) -> None:
    counts: list[int] = []
    threads = [threading.Thread(target=lambda: counts.append(_take_many(prefix, 12, 5000.0))) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(counts) == 12 and sum(counts) == 50  # 144 attempts, 50 fit, the clock stands still


def test_admissions_from_several_processes_never_take_more_than_the_bucket(prefix: str) -> None:
    context = multiprocessing.get_context("fork")
    with context.Pool(4) as pool:
        counts = pool.starmap(_take_many, [(prefix, 30, 7000.0)] * 4)
    assert sum(counts) == 50  # 120 attempts from 4 processes, 50 fit


# --- key names and expiry ------------------------------------------------------------
def test_keys_expire_when_idle_and_a_pause_outlives_the_idle_time(prefix: str) -> None:
    client = redis_client()
    backend = RedisBackend(REDIS_URL, prefix=prefix, idle_seconds=30)
    backend.declare("s", LIMITS, None)
    backend.admit([("s", CALL)], 0.0, take=True)
    assert 0 < client.pttl(redis_key(prefix, "s")) <= 30_000
    backend.pause("s", 100)
    assert 100_000 < client.pttl(redis_key(prefix, "s")) <= 130_000
    client.close()


def test_a_scope_that_expired_is_made_again_full(prefix: str) -> None:
    client = redis_client()
    backend = RedisBackend(REDIS_URL, prefix=prefix, clock=FakeClock())
    backend.declare("s", LIMITS, None)
    backend.admit([("s", CALL)], 0.0, take=True)
    assert backend.snapshot("s").buckets["requests"].level == 59.0
    client.delete(redis_key(prefix, "s"))  # what expiry does
    assert backend.snapshot("s").buckets["requests"].level == 60.0
    assert backend.admit([("s", CALL)], 0.0, take=True).granted
    assert backend.snapshot("s").buckets["requests"].level == 59.0
    client.close()


def test_redis_holds_a_hash_of_the_key_never_the_key(prefix: str) -> None:
    secret = f"sk-ant-api03-{uuid.uuid4().hex}"
    limiter = ProviderLimiter([("anthropic-0", RateLimitConfig(requests_per_minute=60))], refunds_output=True,
                              backend=RedisBackend(REDIS_URL, prefix=prefix), key_ids=[key_id(secret)])
    reservation = limiter.reserve(Cost(10, 10, "claude-3-5-haiku"), deadline=None)
    limiter.mark_sent(reservation)
    limiter.settle(reservation, 10, 5, {"anthropic-ratelimit-requests-limit": "60",
                                        "anthropic-ratelimit-requests-remaining": "58"})
    client = redis_client()
    names = list(client.scan_iter(match=prefix + "*"))
    assert len(names) == 1
    dump = repr(names) + repr(client.hgetall(names[0]))
    assert secret not in dump and secret[-12:] not in dump and "anthropic-0" not in dump
    assert key_id(secret) != key_id(secret + "x") and secret not in key_id(secret)
    client.close()


# --- shared between processes --------------------------------------------------------
def _limiter(prefix: str, secret: str, limits: Optional[RateLimitConfig] = None) -> ProviderLimiter:
    """One process's view: its own connection, the same key."""
    return ProviderLimiter([("anthropic-0", limits)], refunds_output=True, key_ids=[key_id(secret)],
                           backend=RedisBackend(REDIS_URL, prefix=prefix))


def test_a_pause_and_learned_limits_are_seen_by_every_process(prefix: str) -> None:
    secret = f"sk-{uuid.uuid4().hex}"
    first, second = _limiter(prefix, secret), _limiter(prefix, secret)
    reservation = first.reserve(Cost(10, 10), deadline=None)
    first.mark_sent(reservation)
    first.settle(reservation, 10, 10, {"anthropic-ratelimit-requests-limit": "50",
                                       "anthropic-ratelimit-requests-remaining": "3",
                                       "anthropic-ratelimit-requests-reset": "2030-01-01T00:00:00Z"})
    seen = second.status(second.keys[0])
    assert seen is not None and seen["limits"]["requests_per_minute"] == 50.0
    assert seen["requests_remaining"] <= 4  # the server's 3 left, plus a moment's refill
    first.pause(first.keys[0], 7)
    assert second.paused_for(second.keys[0]) == pytest.approx(7, abs=0.5)
    with pytest.raises(LLMRateLimitError):
        second.reserve(Cost(10, 10), deadline=second.clock() + 1)  # paused everywhere: cannot fit in 1 s


def test_settle_is_one_round_trip_and_admission_one(prefix: str) -> None:
    secret = f"sk-{uuid.uuid4().hex}"
    limiter = _limiter(prefix, secret, RateLimitConfig(requests_per_minute=600, input_tokens_per_minute=60000))
    backend = limiter.backend
    assert isinstance(backend, RedisBackend)
    first = limiter.reserve(Cost(10, 10), deadline=None)  # probing: the first answer
    limiter.mark_sent(first)
    limiter.settle(first, 10, 5, {})
    before = backend.round_trips
    for _ in range(5):
        reservation = limiter.reserve(Cost(10, 10), deadline=None)
        limiter.mark_sent(reservation)
        limiter.observe(reservation, {"anthropic-ratelimit-requests-remaining": "500"})  # a stream's opening
        limiter.settle(reservation, 10, 5, {"anthropic-ratelimit-requests-remaining": "500"})
    assert backend.round_trips - before == 10


# --- when Redis fails -------------------------------------------------------------------
def _failover(url: str, clock: FakeClock, **kwargs: Any) -> FailoverBackend:
    return FailoverBackend(RedisBackend(url, socket_timeout=0.5), clock=clock, local_clock=clock, **kwargs)


def test_a_dead_redis_fails_open_to_a_local_share_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    backend = _failover("redis://127.0.0.1:1/0", clock, local_share=0.25)
    backend.declare("s", {"requests": 40.0}, None)
    caplog.set_level(logging.WARNING, logger="llm_sync.ratelimit")
    granted = sum(backend.admit([("s", {"requests": 1.0})], 0.0, take=True).granted for _ in range(20))
    assert granted == 10  # a quarter of 40
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    health = backend.health()
    assert health["mode"] == "local" and not health["healthy"] and health["fallbacks"] == 1


def test_a_dead_redis_fails_closed_with_a_rate_limit_error() -> None:
    backend = _failover("redis://:pw-never-shown@127.0.0.1:1/0", FakeClock(), on_error="fail_closed")
    limiter = ProviderLimiter([("k-0", RateLimitConfig(requests_per_minute=60))], refunds_output=True,
                              backend=backend)
    with pytest.raises(LLMRateLimitError) as info:
        limiter.reserve(Cost(10, 10), deadline=None)
    assert info.value.local and "fail_closed" in str(info.value) and "pw-never-shown" not in str(info.value)
    assert backend.health()["healthy"] is False and "pw-never-shown" not in repr(backend.health())
    assert limiter.keys[0].home.unsent["requests"] == 0  # nothing left held


def test_redis_cut_mid_run_falls_back_then_rejoins_without_losing_or_doubling_a_charge(
        prefix: str, redis_proxy: Any, caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    backend = _failover(redis_proxy.url, clock, local_share=0.5, rejoin_after=2.0)
    backend.primary.prefix = prefix
    limiter = ProviderLimiter([("k-0", RateLimitConfig(requests_per_minute=60))], refunds_output=True,
                              backend=backend, clock=clock)
    scope = limiter.keys[0].home.id
    on_redis = limiter.reserve(Cost(10, 10), deadline=None)
    limiter.mark_sent(on_redis)
    assert backend.mode == "shared"
    redis_proxy.cut()  # Redis goes away with a call in flight
    caplog.set_level(logging.INFO, logger="llm_sync.ratelimit")
    limiter.settle(on_redis, 10, 5, {})  # its correction cannot land: dropped, no error
    local = limiter.reserve(Cost(10, 10), deadline=None)  # served by the local share
    assert backend.mode == "local" and local.source is not on_redis.source
    limiter.mark_sent(local)
    redis_proxy.restore()
    clock.now += 2.5  # time to try again
    limiter.settle(local, 10, 5, {})  # corrected where it was charged: locally
    again = limiter.reserve(Cost(10, 10), deadline=None)
    assert backend.mode == "shared" and again.source is backend.primary
    limiter.mark_sent(again)
    limiter.settle(again, 10, 5, {})
    # Redis saw exactly the two calls it admitted: nothing lost, nothing twice.
    assert 58.0 <= backend.primary.snapshot(scope).buckets["requests"].level < 58.2  # + a moment of refill
    messages = [r.getMessage() for r in caplog.records]
    assert any("unreachable" in m for m in messages) and any("reachable again" in m for m in messages)


def test_client_kill_mid_run_neither_crashes_nor_loses_a_call(prefix: str) -> None:
    clock = FakeClock()
    primary = RedisBackend(REDIS_URL, prefix=prefix, clock=clock)
    backend = FailoverBackend(primary, clock=clock, local_clock=clock)
    limiter = ProviderLimiter([("k-0", RateLimitConfig(requests_per_minute=600))], refunds_output=True,
                              backend=backend, clock=clock)
    killer = redis_client()
    done = 0
    for round_ in range(6):
        reservation = limiter.reserve(Cost(10, 10), deadline=None)
        limiter.mark_sent(reservation)
        limiter.settle(reservation, 10, 5, {})
        done += 1
        # Kill every connection but the killer's own, as an operator might.
        killer.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
    assert done == 6 and backend.mode == "shared"  # a killed idle connection is replaced, not failed over
    assert primary.snapshot(limiter.keys[0].home.id).buckets["requests"].level == 594.0
    killer.close()


def test_backend_errors_are_typed_and_name_no_password() -> None:
    backend = RedisBackend("redis://:hunter2-secret@127.0.0.1:1/0", socket_timeout=0.5)
    backend.declare("s", LIMITS, None)
    with pytest.raises(BackendError) as info:
        backend.admit([("s", CALL)], 0.0, take=True)
    assert "hunter2-secret" not in str(info.value) and "hunter2-secret" not in repr(backend)


# --- waiting across processes -------------------------------------------------------
def test_a_process_waiting_for_a_large_call_is_not_starved_by_small_calls_elsewhere(prefix: str) -> None:
    clock = FakeClock()
    first, second = (RedisBackend(REDIS_URL, prefix=prefix, clock=clock) for _ in range(2))  # two processes
    for backend in (first, second):
        backend.declare("s", {"input_tokens": 600.0}, None)  # 10 a second, 600 at once
    assert first.admit([("s", {"input_tokens": 600.0})], 0.0, take=True).granted  # empty now
    large = first.admit([("s", {"input_tokens": 300.0})], 0.0, take=True, claimant="first:1")
    assert not large.granted and large.quotes[0].wait == pytest.approx(30.0)  # it waits, and claims
    clock.now += 5.0  # 50 tokens back: a small call would fit...
    small = second.admit([("s", {"input_tokens": 10.0})], 0.0, take=True, claimant="second:1")
    assert not small.granted  # ... but the claim comes first
    assert small.quotes[0].wait == pytest.approx(26.0)  # until both fit: (300 + 10 - 50) / 10
    assert second.admit([("s", {"input_tokens": 10.0})], 0.0, take=False).quotes[0].wait == pytest.approx(26.0)
    clock.now += 25.0
    assert first.admit([("s", {"input_tokens": 300.0})], 0.0, take=True, claimant="first:1").granted
    clock.now += 1.0
    assert second.admit([("s", {"input_tokens": 10.0})], 0.0, take=True, claimant="second:1").granted


def test_a_claim_lapses_when_its_process_stops_asking(prefix: str) -> None:
    clock = FakeClock()
    backend = RedisBackend(REDIS_URL, prefix=prefix, clock=clock)
    backend.declare("s", {"input_tokens": 600.0}, None)
    backend.admit([("s", {"input_tokens": 600.0})], 0.0, take=True)
    backend.admit([("s", {"input_tokens": 100.0})], 0.0, take=True, claimant="gone:1")  # waits 10 s, then dies
    clock.now += 5.0
    assert not backend.admit([("s", {"input_tokens": 10.0})], 0.0, take=True, claimant="other:1").granted
    clock.now += 7.5  # past its wait and the grace: the claim no longer counts
    assert backend.admit([("s", {"input_tokens": 10.0})], 0.0, take=True, claimant="other:1").granted


def _waiting_limiter(prefix: str) -> tuple[ProviderLimiter, RedisBackend, FakeClock, list[Optional[float]]]:
    """A limiter on Redis (600 input tokens a minute) whose waits advance a
    fake clock shared with the backend, and the waits it made."""
    clock = FakeClock()
    waits: list[Optional[float]] = []

    def wait(cond: threading.Condition, timeout: Optional[float]) -> None:
        waits.append(timeout)
        clock.now += timeout or 0.0

    backend = RedisBackend(REDIS_URL, prefix=prefix, clock=clock)
    limiter = ProviderLimiter([("k-0", RateLimitConfig(input_tokens_per_minute=600))], refunds_output=True,
                              backend=backend, clock=clock, wait=wait, transit_margin=0.0)
    limiter.keys[0].home.answered = True
    return limiter, backend, clock, waits


def test_a_waiting_caller_sleeps_until_its_call_fits_instead_of_polling(prefix: str) -> None:
    limiter, backend, clock, waits = _waiting_limiter(prefix)
    limiter.backend.declare(limiter.keys[0].home.id, {"input_tokens": 600.0}, None)
    backend.admit([(limiter.keys[0].home.id, {"input_tokens": 600.0})], 0.0, take=True)  # another process drained it
    before = backend.round_trips
    limiter.reserve(Cost(300, 0), deadline=None)
    assert waits == [pytest.approx(30.0)]  # one sleep for the whole wait
    assert backend.round_trips - before == 2  # one look before it, one take after


# --- a key moving to its organisation's scope, process by process ------------------------
def test_once_one_process_moves_a_key_to_its_organisation_the_others_calls_count_there_too(prefix: str) -> None:
    clock = FakeClock()
    moved, behind = (RedisBackend(REDIS_URL, prefix=prefix, clock=clock) for _ in range(2))
    for backend in (moved, behind):
        backend.declare("key", {"requests": 10.0}, None)
        backend.declare("org", {"requests": 10.0}, None)
    for _ in range(3):  # calls of both processes on the key's own scope
        assert behind.admit([("key", {"requests": 1.0})], 0.0, take=True).granted
    moved.seed("org", "key", {})  # the first process learns the organisation
    assert moved.snapshot("org").buckets["requests"].level == 7.0  # owes what the key owed
    moved.seed("org", "key", {})  # a second process learning it: nothing counted twice
    assert moved.snapshot("org").buckets["requests"].level == 7.0
    for _ in range(5):  # the first process spends the organisation's scope
        assert moved.admit([("org", {"requests": 1.0})], 0.0, take=True).granted
    # The process still on the key's scope: its calls count on the organisation's too...
    assert behind.admit([("key", {"requests": 1.0})], 0.0, take=True).granted
    assert moved.snapshot("org").buckets["requests"].level == 1.0
    assert behind.admit([("key", {"requests": 1.0})], 0.0, take=True).granted
    # ... and once it is spent, the key's own scope (4 left) admits nothing more.
    refused = behind.admit([("key", {"requests": 1.0})], 0.0, take=True)
    assert not refused.granted and refused.quotes[0].wait == pytest.approx(6.0)
    assert behind.snapshot("key").buckets["requests"].level == 5.0


def test_callers_in_line_cost_two_round_trips_a_call_however_many_wait(prefix: str) -> None:
    backend = RedisBackend(REDIS_URL, prefix=prefix)
    limiter = ProviderLimiter([("k-0", RateLimitConfig(requests_per_minute=100_000))], refunds_output=True,
                              backend=backend)
    limiter.keys[0].home.answered = True
    start = threading.Barrier(8)

    def calls() -> None:
        start.wait()
        for _ in range(10):
            reservation = limiter.reserve(Cost(10, 10), deadline=None)
            limiter.mark_sent(reservation)
            limiter.settle(reservation, 10, 5, {})

    threads = [threading.Thread(target=calls) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert backend.round_trips == 2 * 80  # one admit and one settle each; callers behind the head never ask


def test_a_call_admitted_through_an_alias_is_corrected_there_too(prefix: str) -> None:
    clock = FakeClock()
    backend = RedisBackend(REDIS_URL, prefix=prefix, clock=clock)
    for scope in ("key", "org"):
        backend.declare(scope, {"input_tokens": 6000.0}, None)
    backend.seed("org", "key", {})  # another process moved the key
    admitted = backend.admit([("key", {"input_tokens": 4000.0})], 0.0, take=True)
    assert admitted.granted and admitted.aliased
    assert backend.snapshot("org").buckets["input_tokens"].level == 2000.0
    backend.settle("key", {"input_tokens": -4000.0}, None, aliased=True)  # refunded: never sent
    assert backend.snapshot("key").buckets["input_tokens"].level == 6000.0
    assert backend.snapshot("org").buckets["input_tokens"].level == 6000.0
    unaliased = backend.admit([("org", {"input_tokens": 100.0})], 0.0, take=True)
    assert unaliased.granted and not unaliased.aliased


def test_a_call_admitted_through_an_alias_is_charged_once_on_the_organisation(prefix: str) -> None:
    """Process ``moved`` already knows key 1's organisation; ``behind``
    admits a call on key 1's old scope (so on the organisation's, through
    the alias), learns the organisation from key 2 first, then settles the
    call: the organisation's scope is not charged for it again."""
    first_key, second_key = f"sk-{uuid.uuid4().hex}", f"sk-{uuid.uuid4().hex}"
    headers = {"anthropic-organization-id": f"org-{uuid.uuid4().hex[:8]}"}
    limits = RateLimitConfig(input_tokens_per_minute=100_000)
    moved = _limiter(prefix, first_key, limits)
    behind = ProviderLimiter([("anthropic-0", limits), ("anthropic-1", limits)], refunds_output=True,
                             key_ids=[key_id(first_key), key_id(second_key)],
                             backend=RedisBackend(REDIS_URL, prefix=prefix))
    learn = moved.reserve(Cost(10, 10), deadline=None)
    moved.mark_sent(learn)
    moved.settle(learn, 10, 10, headers)  # key 1's scope now forwards to the organisation's
    k1, k2 = behind.keys
    call = behind.reserve(Cost(2000, 10), deadline=None, only=k1)
    assert call.aliased
    behind.mark_sent(call)
    other = behind.reserve(Cost(10, 10), deadline=None, only=k2)
    behind.mark_sent(other)
    behind.settle(other, 10, 10, headers)  # ``behind`` meets the organisation through key 2
    org = behind.scope_for(k2).id
    before = behind.backend.snapshot(org).buckets["input_tokens"].level
    behind.settle(call, int(call.amounts["input_tokens"]), 10, headers)  # usage exactly as charged
    after = behind.backend.snapshot(org).buckets["input_tokens"].level
    assert after == pytest.approx(before, abs=50)  # + a moment's refill; charged once, at admission


def test_a_claim_left_by_a_caller_that_gave_up_does_not_block_its_own_process(prefix: str) -> None:
    limiter, backend, clock, waits = _waiting_limiter(prefix)
    limiter.keys[0].calibration = 1.0
    backend.declare(limiter.keys[0].home.id, {"input_tokens": 600.0}, None)
    backend.admit([(limiter.keys[0].home.id, {"input_tokens": 500.0})], 0.0, take=True)  # 100 left
    with pytest.raises(LLMRateLimitError):  # needs 40 s; gives up at once, leaving its claim
        limiter.reserve(Cost(500, 0), deadline=clock.now + 1)
    waits.clear()
    limiter.reserve(Cost(50, 0), deadline=clock.now + 1)  # fits now: its own process's claim is no bar
    assert waits == []


def test_fail_open_keeps_one_local_store_across_outages() -> None:
    clock = FakeClock()
    backend = _failover("redis://127.0.0.1:1/0", clock, local_share=0.5, rejoin_after=2.0)
    backend.declare("s", {"requests": 20.0}, None)
    assert sum(backend.admit([("s", {"requests": 1.0})], 0.0, take=True).granted for _ in range(20)) == 10
    backend._local = None  # as if Redis had answered a ping and the process rejoined it
    clock.now += 0.1
    again = sum(backend.admit([("s", {"requests": 1.0})], 0.0, take=True).granted for _ in range(20))
    assert again == 0 and backend.fallbacks == 2  # the second outage finds the same, spent, bucket


def test_after_fork_runs_once_per_process() -> None:
    backend = _failover("redis://127.0.0.1:1/0", FakeClock())
    lock, primary_lock = backend._lock, backend.primary._lock
    backend.after_fork()  # not a child: nothing to redo, nothing swapped under other threads
    assert backend._lock is lock and backend.primary._lock is primary_lock
