"""Flask: a completion view and a streaming view (server-sent events).

Flask is not a dependency of llm_sync: ``pip install llm_sync flask``
(add ``gunicorn`` to serve it as below).

Offline, against the built-in simulator (no key)::

    LLM_SYNC_SIMULATE=1 flask --app examples/flask_app.py run
    curl -s localhost:5000/complete -H 'content-type: application/json' -d '{"prompt": "Hello"}'
    curl -N 'localhost:5000/stream?prompt=Write+a+story'

For real, under gunicorn, the config from ``$LLM_SYNC_CONFIG`` (or
``./config/llm.yaml``, or ``ANTHROPIC_API_KEY``)::

    gunicorn -w 4 --threads 8 --preload --chdir examples 'flask_app:create_app()'

One manager per worker process: ``get_llm_manager()`` is a process-wide
singleton, shared by the worker's threads. With ``--preload`` the app is
built in the master before it forks; the singleton is fork-safe, so each
worker's first ``get_llm_manager()`` builds a fresh manager (its own
sockets, threads and locks) from the same configuration, never touching the
master's.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterator

from flask import Flask, Response, jsonify, request, stream_with_context

from llm_sync import LLMError, LLMRateLimitError, get_llm_manager

_simulator: Any = None


def simulated_config() -> dict[str, Any]:
    """With ``LLM_SYNC_SIMULATE=1``: the simulator on 127.0.0.1, started once per process."""
    global _simulator
    if _simulator is None:
        from llm_sync.testing import Simulator

        _simulator = Simulator(keys=("sk-sim-1", "sk-sim-2")).start()
    return {"providers": {"anthropic": {"api_keys": list(_simulator.keys), "base_url": _simulator.base_url}}}


def create_app(config: Any = None, endpoint: str = "anthropic") -> Flask:
    """The app; ``config`` is anything ``get_llm_manager`` takes (None: the
    environment's, or the simulator's with ``LLM_SYNC_SIMULATE=1``)."""
    if config is None and os.environ.get("LLM_SYNC_SIMULATE") == "1":
        config = simulated_config()
    app = Flask(__name__)

    def client() -> Any:
        # Per request, cheap: the process's manager (rebuilt after a fork).
        return get_llm_manager(config).get_client(endpoint)

    @app.errorhandler(LLMError)
    def llm_error(error: LLMError) -> Any:
        if isinstance(error, LLMRateLimitError):  # every key busy: tell the caller when to come back
            retry = max(1, round(error.retry_after or 1))
            return jsonify(error=str(error)), 429, {"Retry-After": str(retry)}
        return jsonify(error=f"{type(error).__name__}: {error}"), 502

    @app.post("/complete")
    def complete() -> Any:
        body = request.get_json(force=True)
        response = client().complete(body["prompt"], max_tokens=int(body.get("max_tokens", 256)), timeout=60)
        return jsonify(content=response.content, client_id=response.client_id,
                       usage={"input_tokens": response.usage.input_tokens,
                              "output_tokens": response.usage.output_tokens})

    @app.get("/stream")
    def stream() -> Response:
        prompt = request.args.get("prompt", "Hello")
        # Opened here, so an error before the first text is a normal error response.
        answer = client().stream(prompt, max_tokens=int(request.args.get("max_tokens", 256)), timeout=120)

        def events() -> Iterator[str]:
            # A client that disconnects closes this generator: the stream
            # (its lease and connection) is released at once by the with.
            with answer:
                try:
                    for chunk in answer:
                        yield f"data: {json.dumps({'text': chunk})}\n\n"
                except LLMError as error:  # cut after text was sent: tell the browser
                    yield f"event: error\ndata: {json.dumps({'error': type(error).__name__})}\n\n"
                    return
            yield f"event: done\ndata: {json.dumps({'stop_reason': answer.response.stop_reason})}\n\n"

        return Response(stream_with_context(events()), mimetype="text/event-stream",
                        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.get("/status")
    def status() -> Any:
        return jsonify(get_llm_manager(config).get_status(endpoint))

    return app


def main() -> None:
    """``python examples/flask_app.py``: the development server."""
    create_app().run(port=int(os.environ.get("PORT", "5000")), threaded=True)


if __name__ == "__main__":
    main()
