"""Local provider simulator for testing code that talks to Anthropic or OpenAI.

Public API: :class:`Simulator`, :class:`SimLimits`, :class:`RecordedRequest`
and the deterministic reply/token helpers.  Names load lazily so the pytest
plugin (which imports this package) stays cheap to import.

    from llm_sync.testing import Simulator
    with Simulator(keys=("sk-sim-1",)) as sim:
        ...  # point a client at sim.base_url

Beyond text, markers in the last user turn script the answer (details in
:mod:`llm_sync.testing.tools`): ``CALL:name{json}`` calls a declared tool
(several markers: parallel calls), ``REFUSE`` refuses, ``THINK`` adds
reasoning, ``BADJSON`` makes a structured answer invalid once. A forced
``tool_choice`` or an OpenAI ``response_format`` json_schema is answered with
JSON generated from the schema; tool results are answered
``"Result: <content>"``. Images and documents are validated and counted
(:mod:`.blocks`); Anthropic ``cache_control`` and OpenAI automatic prefix
caching report cache tokens (:mod:`.cache`, prefixes of 1024 tokens or more
unless ``Simulator(cache_min_tokens=...)``).

Rate limits (:class:`SimLimits`) apply per scope and model class, as on the
real APIs: ``Simulator(groups={"acme": [0, 1]})`` or ``sim.set_group`` makes
keys share one organisation's buckets and prompt cache;
``sim.set_limits(scope, SimLimits(...), models=["claude-opus-*"])`` gives a
model class its own limits; ``Simulator(per_model=True)`` gives every other
model name buckets of its own; ``sim.bucket_levels(scope, api, model=...)``
reads the levels.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .faults import Fault, FaultKind
    from .limits import SimLimits
    from .recording import RecordedRequest
    from .blocks import count_input_tokens
    from .replies import count_tokens, default_reply
    from .simulator import ReplyFunction, Simulator

__all__ = [
    "Fault",
    "FaultKind",
    "RecordedRequest",
    "ReplyFunction",
    "SimLimits",
    "Simulator",
    "count_input_tokens",
    "count_tokens",
    "default_reply",
]

_HOMES = {
    "Fault": "faults",
    "FaultKind": "faults",
    "RecordedRequest": "recording",
    "ReplyFunction": "simulator",
    "SimLimits": "limits",
    "Simulator": "simulator",
    "count_input_tokens": "blocks",
    "count_tokens": "replies",
    "default_reply": "replies",
}


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
