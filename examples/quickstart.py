"""Quick start: one completion, one streamed answer.

Reads the config from $LLM_SYNC_CONFIG, ./config/llm.yaml, or the
ANTHROPIC_API_KEY environment variable. To try it offline, run
``llm-sync simulate --keys sk-sim-1`` in another terminal and then:

    ANTHROPIC_API_KEY=sk-sim-1 ANTHROPIC_BASE_URL=http://127.0.0.1:8000 python examples/quickstart.py
"""

from llm_sync import LLMProvider, Message, MessageRole, get_llm_manager


def main() -> None:
    manager = get_llm_manager()
    client = manager.get_client(LLMProvider.ANTHROPIC)

    messages = [Message(MessageRole.USER, "Hello, world!")]
    response = client.complete(messages)
    print(response.content)

    for chunk in client.stream_complete([Message(MessageRole.USER, "Write a story")], max_tokens=50):
        print(chunk, end="", flush=True)
    print()

    manager.close()


if __name__ == "__main__":
    main()
