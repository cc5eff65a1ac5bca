"""Django: a completion view and a streaming view (server-sent events).

Django is not a dependency of llm_sync: ``pip install llm_sync django``.

In your project::

    # settings.py: anything get_llm_manager() takes (a path, a dict); leave
    # it out to use $LLM_SYNC_CONFIG, ./config/llm.yaml or ANTHROPIC_API_KEY
    LLM_SYNC_CONFIG = BASE_DIR / "config" / "llm.yaml"
    LLM_SYNC_ENDPOINT = "anthropic"

    # urls.py (this file copied into your app as llm_views.py)
    from django.urls import path
    from myapp.llm_views import complete_view, stream_view, status_view
    urlpatterns = [
        path("llm/complete", complete_view),
        path("llm/stream", stream_view),
        path("llm/status", status_view),
    ]

Views call ``get_llm_manager(settings.LLM_SYNC_CONFIG)`` per request: cheap
(the same source is recognised without re-reading it), one manager per
process, shared by its threads, rebuilt in each worker forked by gunicorn
``--preload`` or uWSGI. The streaming view needs a WSGI server that streams
(gunicorn with threads, not a buffering proxy: ``X-Accel-Buffering: no`` is
set for nginx).

Offline, against the built-in simulator (no key), with Django's test client::

    LLM_SYNC_SIMULATE=1 python examples/django_views.py
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterator

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from llm_sync import LLMError, LLMRateLimitError, get_llm_manager


def _client() -> Any:
    manager = get_llm_manager(getattr(settings, "LLM_SYNC_CONFIG", None))
    return manager.get_client(getattr(settings, "LLM_SYNC_ENDPOINT", "anthropic"))


def _error(error: LLMError) -> JsonResponse:
    if isinstance(error, LLMRateLimitError):  # every key busy: tell the caller when to come back
        response = JsonResponse({"error": str(error)}, status=429)
        response["Retry-After"] = str(max(1, round(error.retry_after or 1)))
        return response
    return JsonResponse({"error": f"{type(error).__name__}: {error}"}, status=502)


@csrf_exempt
@require_POST
def complete_view(request: HttpRequest) -> HttpResponse:
    body = json.loads(request.body or b"{}")
    try:
        response = _client().complete(body["prompt"], max_tokens=int(body.get("max_tokens", 256)), timeout=60)
    except LLMError as error:
        return _error(error)
    return JsonResponse({"content": response.content, "client_id": response.client_id,
                         "usage": {"input_tokens": response.usage.input_tokens,
                                   "output_tokens": response.usage.output_tokens}})


@require_GET
def stream_view(request: HttpRequest) -> HttpResponse:
    try:  # opened here: an error before the first text is a normal error response
        answer = _client().stream(request.GET.get("prompt", "Hello"),
                                  max_tokens=int(request.GET.get("max_tokens", 256)), timeout=120)
    except LLMError as error:
        return _error(error)

    def events() -> Iterator[str]:
        # Django closes this generator when the client goes away: the with
        # releases the stream's lease and connection at once.
        with answer:
            try:
                for chunk in answer:
                    yield f"data: {json.dumps({'text': chunk})}\n\n"
            except LLMError as error:
                yield f"event: error\ndata: {json.dumps({'error': type(error).__name__})}\n\n"
                return
        yield f"event: done\ndata: {json.dumps({'stop_reason': answer.response.stop_reason})}\n\n"

    response = StreamingHttpResponse(events(), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


@require_GET
def status_view(request: HttpRequest) -> HttpResponse:
    manager = get_llm_manager(getattr(settings, "LLM_SYNC_CONFIG", None))
    return JsonResponse(manager.get_status(getattr(settings, "LLM_SYNC_ENDPOINT", "anthropic")))


# --- running this file: minimal settings, Django's test client --------------------------

urlpatterns: list[Any] = []


def main() -> None:
    from django.test import Client
    from django.urls import path

    from llm_sync.testing import Simulator

    if os.environ.get("LLM_SYNC_SIMULATE") != "1":
        raise SystemExit("set LLM_SYNC_SIMULATE=1 to run against the simulator (or wire the views into a project)")
    with Simulator(keys=("sk-sim-1", "sk-sim-2")) as sim:
        settings.configure(ROOT_URLCONF=__name__, ALLOWED_HOSTS=["testserver"], DEBUG=True,
                           LLM_SYNC_CONFIG={"providers": {"anthropic": {"api_keys": list(sim.keys),
                                                                        "base_url": sim.base_url}}})
        import django

        django.setup()
        urlpatterns.extend([path("llm/complete", complete_view), path("llm/stream", stream_view),
                            path("llm/status", status_view)])
        client = Client()
        answer = client.post("/llm/complete", json.dumps({"prompt": "Hello from Django"}),
                             content_type="application/json").json()
        print("complete:", answer["content"], f"({answer['client_id']})")
        streamed = b"".join(client.get("/llm/stream", {"prompt": "Write a story"}).streaming_content)
        text = "".join(json.loads(line[6:])["text"] for line in streamed.decode().splitlines()
                       if line.startswith("data: ") and '"text"' in line)
        print("stream:  ", text)
        print("status:  ", client.get("/llm/status").json()["available_clients"], "leases free")
        get_llm_manager().close()


if __name__ == "__main__":
    main()
