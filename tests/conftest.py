"""Fixtures shared by the unit tests."""

from __future__ import annotations

from typing import Iterator

import pytest
import responses

# Fixtures for tests of the Redis backend (unit and integration alike).
from redis_support import prefix, redis_proxy  # noqa: F401


@pytest.fixture
def mock() -> Iterator[responses.RequestsMock]:
    """HTTP mocked with ``responses``. A request to a URL nobody registered
    fails with ConnectionError, so no unit test can reach a real host."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps
