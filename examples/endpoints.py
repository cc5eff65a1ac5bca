"""Named endpoints: Anthropic, OpenAI and a local OpenAI-compatible server,
configured side by side and used at once.

Every key under ``providers:`` is an endpoint name; ``kind:`` says which
wire format it speaks (and defaults to the name). Runs offline: two
simulators stand in for the real servers, one of them serving under Gemini's
``/v1beta/openai`` path prefix.

    python examples/endpoints.py
"""

from concurrent.futures import ThreadPoolExecutor

from llm_sync import LLMManager
from llm_sync.testing import Simulator


def main() -> None:
    with Simulator(keys=("sk-cloud-1", "sk-cloud-2")) as cloud, \
            Simulator(keys=("sk-local-1",), path_prefix="/v1beta/openai") as local_server:
        config = {
            "providers": {
                "anthropic": {"api_keys": ["sk-cloud-1", "sk-cloud-2"], "base_url": cloud.base_url},
                "openai": {"api_keys": ["sk-cloud-1"], "base_url": cloud.base_url, "models": ["gpt-4o-mini"]},
                "local": {
                    "kind": "openai",  # speaks chat completions
                    "api_keys": ["sk-local-1"],
                    # /chat/completions is appended to the prefix as it is
                    "base_url": f"{local_server.base_url}/v1beta/openai",
                    "models": ["gemini-2.0-flash"],
                },
            },
        }
        with LLMManager(config) as manager:
            def ask(endpoint: str) -> str:
                response = manager.get_client(endpoint).complete(f"Hello, {endpoint}!", max_tokens=20)
                return f"{response.endpoint:9} ({response.provider}, {response.client_id}): {response.content}"

            with ThreadPoolExecutor(max_workers=3) as executor:
                for line in executor.map(ask, manager.providers):
                    print(line)
        print("local server saw:", sorted({r.path for r in local_server.requests}))


if __name__ == "__main__":
    main()
