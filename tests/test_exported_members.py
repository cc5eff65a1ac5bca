"""Every public name imports from ``llm_sync``, and nothing public is missing."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import llm_sync

API = (Path(__file__).resolve().parents[1] / ".." / "shared" / "design" / "API.md").resolve()

# The names the public contract (API.md) promises at the top level.
CONTRACT = {
    "MessageRole", "Message", "Usage", "LLMResponse", "LLMProvider", "get_llm_manager", "LLMManager",
    "LLMClient", "SessionManager", "LLMError", "LLMRateLimitError", "LLMPoolExhaustedError",
    "LLMTimeoutError", "LLMAuthenticationError", "LLMProviderError", "LLMConnectionError",
    "LLMConfigError", "LLMValidationError", "LLMQuotaExceededError",
}


def test_all_names_import():
    for name in llm_sync.__all__:
        assert getattr(llm_sync, name) is not None, name


def test_contract_names_are_exported():
    assert CONTRACT <= set(llm_sync.__all__)


def test_no_public_name_is_left_out_of_all():
    public = {
        name for name, value in vars(llm_sync).items()
        if not name.startswith(("_", "@")) and not inspect.ismodule(value)
    }
    assert public <= set(llm_sync.__all__) | {"__version__"}, public - set(llm_sync.__all__)


def test_every_error_class_is_exported():
    from llm_sync import errors

    classes = {name for name, value in vars(errors).items()
               if inspect.isclass(value) and issubclass(value, errors.LLMError)}
    assert "LLMClosedError" in classes
    assert classes <= set(llm_sync.__all__), classes - set(llm_sync.__all__)
    assert classes <= set(errors.__all__), classes - set(errors.__all__)


def test_middleware_and_testing_entry_points():
    from llm_sync.middleware.base import Middleware
    from llm_sync.middleware.ratelimit import RateLimitMiddleware
    from llm_sync.testing import SimLimits, Simulator

    assert issubclass(RateLimitMiddleware, Middleware)
    assert Simulator and SimLimits


def test_error_names_in_the_api_document_exist():
    if not API.is_file():  # the design folder sits beside the repository in CI
        return
    names = set(re.findall(r"`(LLM[A-Za-z]+Error)`", API.read_text("utf-8")))
    assert names and names <= set(llm_sync.__all__)
