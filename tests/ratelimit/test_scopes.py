"""Rate-limit scopes: config parsing of groups and model classes, scope ids,
and per-scope admission, probing and pauses (fake clock)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from llm_sync import LLMConfigError
from llm_sync.config import RateLimitConfig, load_config
from llm_sync.errors import LLMRateLimitError
from llm_sync.ratelimit import Cost, ProviderLimiter
from llm_sync.ratelimit.key import scope_id


def _provider(**entry: Any) -> Any:
    return load_config({"providers": {"anthropic": entry}}).providers["anthropic"]


# --- config ---------------------------------------------------------------
def test_api_keys_take_strings_and_grouped_entries() -> None:
    settings = _provider(api_keys=["k0", {"key": "k1", "group": "acme"}, {"key": "k2", "group": "acme"},
                                   {"key": "k3"}, "k4, k5"])
    assert [key.get_secret_value() for key in settings.api_keys] == ["k0", "k1", "k2", "k3", "k4", "k5"]
    assert [settings.key_group(i) for i in range(6)] == [None, "acme", "acme", None, None, None]
    assert "k1" not in repr(settings)


def test_kind_filled_in_keeps_the_groups() -> None:
    config = load_config({"providers": {"anthropic": {"api_keys": [{"key": "k1", "group": "g"}]}}})
    assert config.endpoint("anthropic").key_group(0) == "g"


@pytest.mark.parametrize("entry, words", [
    ({"key": "k1", "grop": "acme"}, "api_keys[0]: unknown field 'grop'"),
    ({"group": "acme"}, "api_keys[0].key"),
    ({"key": "k1", "group": ""}, "api_keys[0].group"),
    ({"key": "k1", "group": "a b"}, "api_keys[0].group"),
    ({"key": "k1", "group": 3}, "api_keys[0].group"),
])
def test_bad_key_entries_name_the_field_never_the_key(entry: dict[str, Any], words: str) -> None:
    with pytest.raises(LLMConfigError) as caught:
        _provider(api_keys=[entry])
    assert words in str(caught.value)
    assert "k1" not in str(caught.value).replace("api_keys[0]", "")


def test_model_classes_are_apart_from_the_per_key_entries() -> None:
    settings = _provider(api_keys=["k0", "k1"], rate_limits=[
        {"requests_per_minute": 10}, {"requests_per_minute": 20},
        {"models": ["claude-opus-*", "claude-3-opus*"], "input_tokens_per_minute": 1000},
    ])
    assert settings.limits_for_key(1) == RateLimitConfig(requests_per_minute=20)
    assert [entry.models for entry in settings.model_classes] == [["claude-opus-*", "claude-3-opus*"]]
    # One default entry for all keys, plus a class: fine too.
    single = _provider(api_keys=["k0", "k1"], rate_limits=[{"models": ["x-*"], "requests_per_minute": 1},
                                                           {"requests_per_minute": 5}])
    assert single.limits_for_key(1) == RateLimitConfig(requests_per_minute=5)


@pytest.mark.parametrize("entry, rate_limits, words", [
    (["k0", "k1", "k2"], [{"requests_per_minute": 1}, {"requests_per_minute": 2}], "2 entries without models"),
    (["k0"], [{"models": []}], "models"),
    (["k0"], [{"models": [""]}], "models"),
    (["k0"], [{"models": ["a-*"]}, {"models": ["a-*"]}], "'a-*' is in two entries"),
    ([{"key": "k0", "group": "g"}, {"key": "k1", "group": "g"}],
     [{"requests_per_minute": 1}, {"requests_per_minute": 2}], "both in group 'g' but have different limits"),
])
def test_bad_scopes_are_config_errors(entry: list[Any], rate_limits: list[Any], words: str) -> None:
    with pytest.raises(LLMConfigError, match="rate_limits") as caught:
        _provider(api_keys=entry, rate_limits=rate_limits)
    assert words in str(caught.value)


def test_a_group_may_repeat_the_same_per_key_limits() -> None:
    settings = _provider(api_keys=[{"key": "k0", "group": "g"}, {"key": "k1", "group": "g"}, "k2"],
                         rate_limits=[{"requests_per_minute": 1}, {"requests_per_minute": 1},
                                      {"requests_per_minute": 9}])
    assert settings.key_group(1) == "g" and settings.key_group(2) is None


# --- scope ids ------------------------------------------------------------
def _limiter(clock: list[float], **kwargs: Any) -> ProviderLimiter:
    def wait(cond: Any, timeout: Any) -> None:
        clock[0] += timeout if timeout is not None else 1.0

    return ProviderLimiter(kwargs.pop("keys", [("anthropic-0", None), ("anthropic-1", None), ("anthropic-2", None)]),
                           refunds_output=True, clock=lambda: clock[0], wall_clock=lambda: 1e9 + clock[0],
                           wait=wait, **kwargs)


def test_scope_ids_name_owner_and_model_class() -> None:
    assert scope_id("anthropic-0", "") == "anthropic-0"
    assert scope_id("anthropic:acme", "claude-opus-*") == "anthropic:acme|claude-opus-*"
    opus = RateLimitConfig(models=["claude-opus-*", "opus"], requests_per_minute=5)
    limiter = _limiter([0.0], groups=[None, "acme", "acme"], model_classes=[opus], default_model="haiku",
                       name="anthropic")
    k0, k1, k2 = limiter.keys
    assert k0.scope == "anthropic-0|haiku"
    assert k1.scope == k2.scope == "anthropic:acme|haiku"
    assert k1.home is k2.home  # one group, one bookkeeping
    assert limiter.scope_for(k0, "claude-opus-4").id == "anthropic-0|claude-opus-*,opus"
    assert limiter.scope_for(k1, "opus") is limiter.scope_for(k2, "claude-opus-4")
    assert limiter.scope_for(k0, "sonnet").id == "anthropic-0|sonnet"
    assert limiter.scope_for(k0, "sonnet").configured == {}
    assert limiter.scope_for(k0, "opus").configured == {"requests": 5.0}


# --- admission per scope --------------------------------------------------
def test_a_pause_holds_one_model_class_only() -> None:
    clock = [0.0]
    limiter = _limiter(clock, keys=[("anthropic-0", RateLimitConfig(requests_per_minute=600))], default_model="a")
    key = limiter.keys[0]
    limiter.pause(key, 30.0, "b")
    assert limiter.paused_for(key, "b") == 30.0
    assert limiter.paused_for(key) == 0.0
    reservation = limiter.reserve(Cost(10, 10, "a"), deadline=clock[0])
    assert reservation.scope.id == "anthropic-0|a"
    with pytest.raises(LLMRateLimitError) as caught:
        limiter.reserve(Cost(10, 10, "b"), deadline=clock[0] + 1)
    assert caught.value.retry_after is not None and caught.value.retry_after >= 29


def test_probing_is_per_scope() -> None:
    clock = [0.0]
    limiter = _limiter(clock, keys=[("anthropic-0", None)], default_model="a")
    key = limiter.keys[0]
    held = [limiter.reserve(Cost(10, 10, "a"), deadline=clock[0]) for _ in range(2)]
    assert key.probe_full  # model a's two probes are out
    # model b has answered nothing either, but its probe slots are its own
    other = limiter.reserve(Cost(10, 10, "b"), deadline=clock[0])
    assert other.scope is not held[0].scope
    for reservation in held + [other]:
        limiter.refund(reservation, answered=False)


def test_keys_of_a_group_never_admit_the_group_limit_twice() -> None:
    clock = [0.0]
    limits = RateLimitConfig(requests_per_minute=60, burst_seconds=5)  # 5 at once, then 1/s
    limiter = _limiter(clock, keys=[("anthropic-0", limits), ("anthropic-1", limits)], groups=["g", "g"])
    for key in limiter.keys:
        key.answered = True
    admitted = []
    while True:
        try:
            admitted.append(limiter.reserve(Cost(1, 1), deadline=clock[0]))
        except LLMRateLimitError:
            break
    assert len(admitted) == 4  # 5 less the transit margin's share, not 2 × that
    assert {r.key.index for r in admitted} == {0, 1}  # spread over both keys


def test_status_shows_each_model_class() -> None:
    clock = [0.0]
    opus = RateLimitConfig(models=["opus-*"], requests_per_minute=5)
    limiter = _limiter(clock, keys=[("anthropic-0", RateLimitConfig(requests_per_minute=600))],
                       model_classes=[opus], default_model="haiku")
    key = limiter.keys[0]
    key.answered = True
    limiter.reserve(Cost(10, 10, "opus-4"), deadline=clock[0])
    status = limiter.status(key)
    assert status is not None
    assert status["limits"] == {"requests_per_minute": 600}
    assert status["requests_remaining"] == 600
    assert set(status["models"]) == {"haiku", "opus-*"}
    assert status["models"]["opus-*"]["limits"] == {"requests_per_minute": 5}
    assert status["models"]["opus-*"]["requests_remaining"] == 4


def test_what_one_key_of_a_group_learns_holds_for_the_whole_group() -> None:
    clock = [0.0]
    limiter = _limiter(clock, keys=[("anthropic-0", None), ("anthropic-1", None), ("anthropic-2", None)],
                       groups=["g", "g", None], default_model="m")
    k0, k1, k2 = limiter.keys
    reservation = limiter.reserve(Cost(10, 10, "m"), deadline=clock[0], only=k0)
    limiter.mark_sent(reservation)
    reset = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1e9 + 60))
    headers = {"anthropic-ratelimit-requests-limit": "60", "anthropic-ratelimit-requests-remaining": "0",
               "anthropic-ratelimit-requests-reset": reset}
    limiter.settle(reservation, 10, 10, headers)
    assert k1.answered and not k2.answered  # the group's scope answered; k2's own did not
    with pytest.raises(LLMRateLimitError):  # k0's empty bucket is k1's too
        limiter.reserve(Cost(10, 10, "m"), deadline=clock[0] + 0.5, only=k1)
    status = limiter.status(k1)
    assert status is not None and status["limits"] == {"requests_per_minute": 60}
    assert limiter.status(k2) is None  # nothing learned for the key outside the group
    # Another model on the same group is a scope of its own: not held.
    limiter.reserve(Cost(10, 10, "other"), deadline=clock[0], only=k1)


# --- organisations learned from the answer's headers ----------------------
def _answer(limiter: ProviderLimiter, key: Any, headers: dict[str, str], model: str = "m") -> Any:
    reservation = limiter.reserve(Cost(10, 10, model), deadline=None, only=key)
    limiter.mark_sent(reservation)
    limiter.settle(reservation, 10, 10, headers)
    return reservation


def test_a_key_learns_its_organisation_from_an_answer() -> None:
    limiter = _limiter([0.0], default_model="m", name="anthropic")
    k0 = limiter.keys[0]
    before = limiter.scope_for(k0)
    reservation = _answer(limiter, k0, {"anthropic-organization-id": "org-abc"})
    assert reservation.scope is before  # the reservation settled where it was made
    assert k0.owner == "anthropic:org:org-abc"
    after = limiter.scope_for(k0)
    assert after is not before and after.id == "anthropic:org:org-abc|m"
    assert k0.home is after and not after.probing  # its organisation answered
    assert limiter.scope_for(k0, "other").owner == "anthropic:org:org-abc"


def test_keys_answering_with_one_organisation_share_its_scopes() -> None:
    clock = [0.0]
    limiter = _limiter(clock, default_model="m", name="openai")
    k0, k1, k2 = limiter.keys
    assert limiter.scope_for(k0) is not limiter.scope_for(k1)
    _answer(limiter, k0, {"openai-organization": "org-1"})
    _answer(limiter, k1, {"openai-organization": "org-1"})
    _answer(limiter, k2, {"openai-organization": "org-2"})
    assert limiter.scope_for(k0) is limiter.scope_for(k1)
    assert limiter.scope_for(k0, "x") is limiter.scope_for(k1, "x")
    assert limiter.scope_for(k2) is not limiter.scope_for(k0)
    # What one learns from headers is the other's limit too.
    reset = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1e9 + clock[0] + 60))
    _answer(limiter, k0, {"openai-organization": "org-1", "anthropic-ratelimit-requests-limit": "60",
                          "anthropic-ratelimit-requests-remaining": "0", "anthropic-ratelimit-requests-reset": reset})
    status = limiter.status(k1)
    assert status is not None and status["limits"] == {"requests_per_minute": 60}


def test_a_configured_group_is_never_overridden_by_the_organisation() -> None:
    limiter = _limiter([0.0], groups=["g", "g", None], default_model="m", name="anthropic")
    k0, k1, _ = limiter.keys
    home = limiter.scope_for(k0)
    _answer(limiter, k0, {"anthropic-organization-id": "org-other"})
    assert k0.owner == "anthropic:g" and limiter.scope_for(k0) is home is limiter.scope_for(k1)


@pytest.mark.parametrize("value", ["", "   ", "org with spaces", "x" * 200, "org\nx", "../etc"])
def test_implausible_organisation_ids_are_ignored(value: str) -> None:
    limiter = _limiter([0.0], default_model="m", name="anthropic")
    k0 = limiter.keys[0]
    _answer(limiter, k0, {"anthropic-organization-id": value})
    assert k0.owner == "anthropic-0"


def test_a_refused_or_streamed_answer_teaches_the_organisation_too() -> None:
    limiter = _limiter([0.0], default_model="m", name="anthropic")
    k0, k1, _ = limiter.keys
    refused = limiter.reserve(Cost(10, 10, "m"), deadline=None, only=k0)
    limiter.mark_sent(refused)
    limiter.refund(refused, {"anthropic-organization-id": "org-a"}, keep_request=True)
    streamed = limiter.reserve(Cost(10, 10, "m"), deadline=None, only=k1)
    limiter.mark_sent(streamed)
    limiter.observe(streamed, {"anthropic-organization-id": "org-a"})
    assert limiter.scope_for(k0) is limiter.scope_for(k1)
    limiter.settle(streamed, 10, 10)
    assert streamed.scope.in_flight == 0 and streamed.scope.id == "anthropic-1|m"


def test_a_charge_on_a_scope_the_key_just_left_is_given_back_and_chosen_again():
    """A key that learns its organisation between choosing a scope and
    charging it must not leave the charge on the abandoned scope."""
    limits = RateLimitConfig(requests_per_minute=60, input_tokens_per_minute=6000, output_tokens_per_minute=600)
    limiter = ProviderLimiter([("k-0", limits)], refunds_output=True)
    key = limiter.keys[0]
    old = limiter.scopes.resolve(key, "")
    old.answered = True
    limiter._declare(old)
    before = limiter.backend.snapshot(old.id)
    admit = limiter.backend.admit
    moves = []

    def admit_while_the_key_moves(*args, **kwargs):
        result = admit(*args, **kwargs)
        if not moves:  # the organisation is learned while the backend charges
            key.owner = "endpoint:org:acme"
            moves.append(result)
        return result

    limiter.backend.admit = admit_while_the_key_moves  # type: ignore[method-assign]
    reservation = limiter.reserve(Cost(100, 10), deadline=None)
    assert moves and moves[0].granted  # the first charge landed on the old scope...
    assert reservation.scope is not old and reservation.scope.owner == "endpoint:org:acme"
    after = limiter.backend.snapshot(old.id)
    # ... and was given back there; the call is charged on the new scope.
    assert after.buckets["requests"].level == pytest.approx(before.buckets["requests"].level)
    assert after.buckets["input_tokens"].level == pytest.approx(before.buckets["input_tokens"].level)
    assert all(abs(v) < 1e-9 for v in old.unsent.values())


def test_every_model_class_of_a_key_moves_to_its_organisation_with_what_it_owes() -> None:
    """A call out on another model class when the key learns its
    organisation still counts there: that class's new scope is seeded from
    the key's own, not made full."""
    limits = RateLimitConfig(requests_per_minute=60)
    limiter = _limiter([0.0], keys=[("anthropic-0", limits)], default_model="m", name="anthropic")
    k0 = limiter.keys[0]
    for model in ("m", "other"):
        limiter.scope_for(k0, model).answered = True
    out = [limiter.reserve(Cost(10, 10, "other"), deadline=None, only=k0) for _ in range(3)]  # in flight
    for reservation in out:
        limiter.mark_sent(reservation)
    _answer(limiter, k0, {"anthropic-organization-id": "org-abc"})  # answered on model "m"
    moved = limiter.scope_for(k0, "other")
    assert moved.owner == "anthropic:org:org-abc"
    assert limiter.backend.snapshot(moved.id).buckets["requests"].level == pytest.approx(57.0)
