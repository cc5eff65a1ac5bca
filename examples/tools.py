"""Tools: the full round trip (call → tool result → final answer) and
structured output, for both endpoint kinds, in a few lines each.

Runs offline against the simulator, whose model calls a tool when the
prompt says ``CALL:name{json}`` (see ``llm_sync.testing``):

    python examples/tools.py
"""

import json

from pydantic import BaseModel

from llm_sync import LLMManager, Message, MessageRole, Tool
from llm_sync.testing import Simulator

WEATHER = Tool(
    "get_weather",
    "The current weather in a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


class City(BaseModel):
    """A city and its country."""

    name: str
    country: str


def get_weather(city: str) -> str:
    return json.dumps({"city": city, "sky": "sunny", "celsius": 21})


def round_trip(manager: LLMManager, endpoint: str) -> None:
    client = manager.get_client(endpoint)
    history = [Message(MessageRole.USER, 'Weather in Oslo and Rome? CALL:get_weather{"city": "Oslo"} '
                                         'CALL:get_weather{"city": "Rome"}')]
    response = client.complete(history, tools=[WEATHER])
    while response.tool_calls:  # the model asked for tools: answer every call
        history.append(response.to_message())
        for call in response.tool_calls:
            print(f"[{endpoint}] calling {call.name}({call.arguments})")
            history.append(Message.tool_result(call.id, get_weather(**call.arguments)))
        response = client.complete(history, tools=[WEATHER])
    print(f"[{endpoint}] {response.content}")

    with client.stream(history[:1], tools=[WEATHER]) as stream:  # the same call, streamed
        for _ in stream:
            pass
    print(f"[{endpoint}] streamed: {[(c.name, c.arguments) for c in stream.response.tool_calls]}")

    city = client.complete("Name a city.", response_model=City).parsed
    print(f"[{endpoint}] structured: {city!r}")


def main() -> None:
    with Simulator(keys=("sk-sim-1",)) as sim:
        config = {"providers": {
            "anthropic": {"api_keys": ["sk-sim-1"], "base_url": sim.base_url, "models": ["claude-sim-1"]},
            "openai": {"api_keys": ["sk-sim-1"], "base_url": sim.base_url, "models": ["gpt-sim-1"]},
        }}
        with LLMManager.from_dict(config) as manager:
            for endpoint in ("anthropic", "openai"):
                round_trip(manager, endpoint)


if __name__ == "__main__":
    main()
