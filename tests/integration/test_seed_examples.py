"""The seed README's examples, as written minus ``await``."""

from __future__ import annotations

import multiprocessing
import os
import sys
from pathlib import Path

import pytest
import yaml

from llm_sync import (
    LLMProvider,
    LLMRateLimitError,
    Message,
    MessageRole,
    SessionManager,
    get_llm_manager,
)
from llm_sync.middleware.base import Middleware

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def configured(tmp_path, monkeypatch, sim_config):
    """``get_llm_manager()`` with no arguments finds this via $LLM_SYNC_CONFIG."""
    path = tmp_path / "llm.yaml"
    path.write_text(yaml.safe_dump(sim_config(max_size=4)))
    monkeypatch.setenv("LLM_SYNC_CONFIG", str(path))
    return path


def test_quick_start(configured, capsys):
    manager = get_llm_manager()
    client = manager.get_client(LLMProvider.ANTHROPIC)

    messages = [Message(MessageRole.USER, "Hello, world!")]
    response = client.complete(messages)
    print(response.content)

    manager.close()
    assert capsys.readouterr().out == "Simulated reply to: Hello, world!\n"
    assert manager.closed


def test_simple_completion_and_streaming(configured, capsys):
    client = get_llm_manager().get_client(LLMProvider.ANTHROPIC)
    messages = [Message(MessageRole.USER, "Explain quantum computing")]
    response = client.complete(messages, max_tokens=200)
    assert response.content == "Simulated reply to: Explain quantum computing"

    messages = [Message(MessageRole.USER, "Write a story")]
    for chunk in client.stream_complete(messages):
        print(chunk, end='', flush=True)
    assert capsys.readouterr().out == "Simulated reply to: Write a story"


def test_conversation_with_history(configured):
    client = get_llm_manager().get_client(LLMProvider.ANTHROPIC)
    session = SessionManager()
    session.add_message(MessageRole.USER, "My name is Alice")
    response = client.complete(session.get_messages())
    session.add_message(MessageRole.ASSISTANT, response.content)

    # Later in conversation
    session.add_message(MessageRole.USER, "What's my name?")
    response = client.complete(session.get_messages())
    assert "Alice" in response.content


def test_custom_system_prompt(configured, llm_simulator):
    client = get_llm_manager().get_client(LLMProvider.ANTHROPIC)
    messages = [
        Message(MessageRole.SYSTEM, "You are a helpful coding assistant"),
        Message(MessageRole.USER, "Write a Python function to sort a list"),
    ]
    response = client.complete(messages)
    assert response.content
    body = llm_simulator.requests[-1].body
    assert body["system"] == "You are a helpful coding assistant"
    assert [m["role"] for m in body["messages"]] == ["user"]


def test_parallel_processing_with_pool(configured):
    def process_batch(prompts):
        manager = get_llm_manager()
        client = manager.get_client(LLMProvider.ANTHROPIC)
        results = client.complete_batch([[Message(MessageRole.USER, p)] for p in prompts])
        return [r.content for r in results]

    prompts = [f"Question {i}" for i in range(50)]
    answers = process_batch(prompts)
    assert answers == [f"Simulated reply to: Question {i}" for i in range(50)]


def test_monitor_pool_status(configured, capsys):
    manager = get_llm_manager()
    manager.get_client(LLMProvider.ANTHROPIC).complete("hi")
    status = manager.get_status(LLMProvider.ANTHROPIC)
    print(f"Available clients: {status['available_clients']}/{status['total_clients']}")
    print(f"Queue size: {status['queue_size']}")
    for client_status in status['client_statuses']:
        if client_status['rate_limit_status']:
            print(f"Client {client_status['client_id']}:")
            print(f"  Tokens remaining: {client_status['rate_limit_status']['tokens_remaining']}")
    out = capsys.readouterr().out
    assert "Available clients: 4/4\nQueue size: 0\n" in out


def test_rate_limit_handling_example(configured, llm_simulator):
    client = get_llm_manager().get_client(LLMProvider.ANTHROPIC)
    messages = [Message(MessageRole.USER, "hi")]
    llm_simulator.inject(status=429, headers={"retry-after": "7"}, count=10)
    with pytest.raises(LLMRateLimitError) as info:
        client.complete(messages)
    assert info.value.retry_after == 7


def test_custom_middleware(configured):
    class CustomMiddleware(Middleware):
        def process_request(self, request, context):
            context['custom_data'] = 'value'
            return request

        def process_response(self, response, context):
            response.metadata['custom'] = context.get('custom_data')
            return response

    manager = get_llm_manager()
    pool = manager._pools[LLMProvider.ANTHROPIC]
    for provider in pool._clients:
        provider.middleware_chain.add(CustomMiddleware())
    response = manager.get_client(LLMProvider.ANTHROPIC).complete("hi")
    assert response.metadata["custom"] == "value"


def test_load_test(configured):
    import time

    manager = get_llm_manager()
    client = manager.get_client(LLMProvider.ANTHROPIC)
    start = time.time()
    futures = [client.submit([Message(MessageRole.USER, f"Test {i}")], max_tokens=10) for i in range(100)]
    results = [f.exception() or f.result() for f in futures]
    success = sum(1 for r in results if not isinstance(r, Exception))
    duration = time.time() - start
    assert success == 100 and duration > 0


def test_singleton_is_shared_and_rebuilt_after_close(configured):
    first = get_llm_manager()
    assert get_llm_manager() is first
    first.close()
    second = get_llm_manager()
    assert second is not first and not second.closed


def _child_manager_id(queue):
    from llm_sync import get_llm_manager

    queue.put(id(get_llm_manager()))


@pytest.mark.skipif(sys.platform == "win32", reason="fork() is POSIX-only")
def test_child_after_fork_gets_fresh_manager(configured):
    parent = get_llm_manager()
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child_manager_id, args=(queue,))
    child.start()
    child_id = queue.get(timeout=20)
    child.join(20)
    assert child.exitcode == 0
    # the parent's manager is still alive in the child's copied memory, so a
    # fresh manager there cannot have its id; the inherited one would
    assert child_id != id(parent)


def test_examples_quickstart_script(configured, llm_simulator):
    import subprocess

    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        capture_output=True, text=True, timeout=60, env={**os.environ},
    )
    assert result.returncode == 0, result.stderr
    assert "Simulated reply to: Hello, world!" in result.stdout


def test_get_llm_manager_with_the_same_path_does_not_reread_it(configured, monkeypatch):
    import llm_sync.manager as manager_module

    first = get_llm_manager(str(configured))
    calls = []
    real = manager_module.load_config
    monkeypatch.setattr(manager_module, "load_config", lambda *a, **k: calls.append(a) or real(*a, **k))
    assert get_llm_manager(str(configured)) is first
    assert calls == []


def test_export_metrics(configured, capsys):
    from llm_sync import MetricsMiddleware

    manager = get_llm_manager()
    manager.get_client(LLMProvider.ANTHROPIC).complete_batch([f"q{i}" for i in range(8)])
    # After running requests
    pool = manager._pools[LLMProvider.ANTHROPIC]
    for client in pool._clients:
        metrics = client.middleware_chain.get_middleware(MetricsMiddleware).get_metrics()
        print(f"Client metrics:")
        print(f"  Total requests: {metrics['total_requests']}")
        print(f"  Avg latency: {metrics['avg_latency']:.2f}ms")
        print(f"  Success rate: {metrics['success_rate']:.1%}")
    out = capsys.readouterr().out
    totals = [int(line.split(":")[1]) for line in out.splitlines() if "Total requests" in line]
    assert sum(totals) == 8 and len(totals) == 4
    assert "Success rate: 100.0%" in out
