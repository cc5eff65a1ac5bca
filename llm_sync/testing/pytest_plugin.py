"""Pytest plugin (entry point ``pytest11: llm_sync``) providing ``llm_simulator``.

Loaded into every pytest run of projects that install llm-sync, so it imports
nothing heavy until a test actually asks for the fixture.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .simulator import Simulator

__all__ = ["SIMULATOR_KEYS", "llm_simulator"]

SIMULATOR_KEYS = ("sk-sim-1", "sk-sim-2", "sk-sim-3", "sk-sim-4")


@pytest.fixture
def llm_simulator() -> Iterator[Simulator]:
    """A started simulator with four keys (``sk-sim-1`` .. ``sk-sim-4``), stopped afterwards."""
    from .simulator import Simulator

    with Simulator(keys=SIMULATOR_KEYS) as simulator:
        yield simulator
