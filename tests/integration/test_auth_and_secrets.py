"""A wrong key fails with a typed error, and no key leaks anywhere."""

from __future__ import annotations

import logging
import pickle

import pytest

from llm_sync import LLMAuthenticationError, LLMManager

WRONG_KEY = "sk-wrong-key-0123456789abcdefSECRET"


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_wrong_key_typed_error_without_key(llm_simulator, sim_config, caplog, capsys, provider):
    caplog.set_level(logging.DEBUG)
    config = sim_config()
    config["providers"][provider]["api_keys"] = [WRONG_KEY]
    with LLMManager(config) as manager:
        client = manager.get_client(provider)
        with pytest.raises(LLMAuthenticationError) as info:
            client.complete("hi")
        error = info.value
        assert error.status_code == 401
        status = manager.get_status(provider)
        texts = [
            str(error), repr(error), error.message, str(error.__dict__), pickle.dumps(error).decode("latin-1"),
            repr(manager), repr(manager.config), str(manager.config), repr(manager.pool(provider)),
            repr(client), str(status), repr(manager.pool(provider).clients),
            *(record.getMessage() for record in caplog.records),
            *(str(record.args) for record in caplog.records),
        ]
        assert status["client_statuses"][0]["failed_requests"] == 1
    out, err = capsys.readouterr()
    texts += [out, err]
    for text in texts:
        assert WRONG_KEY not in text
        assert "0123456789abcdef" not in text


def test_recorded_requests_never_hold_keys(make_manager, llm_simulator):
    make_manager().get_client("openai").complete("hi")
    assert all(key not in repr(llm_simulator.requests) for key in llm_simulator.keys)


def test_redirect_is_refused_and_key_not_forwarded(make_manager, llm_simulator):
    from llm_sync import LLMProviderError

    other = llm_simulator.base_url.replace("127.0.0.1", "localhost") + "/v1/messages"
    llm_simulator.inject_redirect(other)
    manager = make_manager()
    with pytest.raises(LLMProviderError) as info:
        manager.get_client("anthropic").complete("hi")
    assert info.value.status_code == 302 and "redirect" in str(info.value)
    assert llm_simulator.request_count() == 1  # the Location was never followed
