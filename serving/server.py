"""flywheel's CPU model server: the subset of vLLM's OpenAI-compatible API that flywheel uses.

    GET  /v1/models                  base models and loaded adapters (vLLM lists adapters with a parent)
    POST /v1/chat/completions        causal-LM adapters: greedy, non-streaming
    POST /classify  (/v1/classify)   encoder adapters: {"model", "input": str | [str]} -> label + probs
    POST /v1/load_lora_adapter       {"lora_name", "lora_path"}: load at runtime (names are immutable)
    POST /v1/unload_lora_adapter     {"lora_name"}
    GET  /health, GET /metrics       liveness; Prometheus text

Request and response bodies follow vLLM's (and so OpenAI's) shapes, so the router talks to this
server and to vLLM the same way. Model work runs in worker threads, off the event loop; each
base model serves one request at a time (the adapter is switched per request).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import uuid
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from .engine import AdapterConflict, AdapterError, AdapterNotFound, Engine

log = logging.getLogger("flywheel.serve")


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error(status: int, message: str, kind: str = "BadRequestError") -> JSON:
    return JSON({"error": {"message": message, "type": kind, "param": None, "code": status}}, status_code=status)


def _text_of(content: Any) -> str:
    """An OpenAI message content: a string, or a list of parts of which the text ones count."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    if content is None:
        return ""
    raise ValueError("message content must be a string or a list of content parts")


class Metrics:
    """Counters for /metrics (Prometheus text format)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = {}
        self.seconds: dict[str, float] = {}

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(endpoint, status)] = self.requests.get((endpoint, status), 0) + 1
            self.seconds[endpoint] = self.seconds.get(endpoint, 0.0) + seconds

    def render(self, extra: dict[str, float] | None = None) -> str:
        lines = ["# TYPE flywheel_serve_requests_total counter"]
        with self._lock:
            for (ep, st), n in sorted(self.requests.items()):
                lines.append(f'flywheel_serve_requests_total{{endpoint="{ep}",status="{st}"}} {n}')
            lines.append("# TYPE flywheel_serve_request_seconds_total counter")
            for ep, s in sorted(self.seconds.items()):
                lines.append(f'flywheel_serve_request_seconds_total{{endpoint="{ep}"}} {s:.6f}')
        for k, v in (extra or {}).items():
            lines.append(f"{k} {v}")
        return "\n".join(lines) + "\n"


def chat_response(name: str, out) -> dict[str, Any]:
    """The OpenAI/vLLM chat.completion body for an engine Completion."""
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
        "model": name,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": out.text}, "logprobs": None,
                     "finish_reason": out.finish_reason}],
        "usage": {"prompt_tokens": out.prompt_tokens, "completion_tokens": out.completion_tokens,
                  "total_tokens": out.prompt_tokens + out.completion_tokens},
    }


def classify_response(name: str, out) -> dict[str, Any]:
    """vLLM's /classify body for engine Classifications."""
    n_tok = sum(c.prompt_tokens for c in out)
    return {
        "id": f"classify-{uuid.uuid4().hex}", "object": "list", "created": int(time.time()), "model": name,
        "data": [{"index": i, "label": c.label, "probs": c.probs, "num_classes": len(c.probs)}
                 for i, c in enumerate(out)],
        "usage": {"prompt_tokens": n_tok, "total_tokens": n_tok, "completion_tokens": 0,
                  "prompt_tokens_details": None},
    }


def parse_chat(req: dict) -> tuple[str, list[dict], int | None]:
    """(model, messages, max_tokens) of a chat completion request, or ValueError naming the field."""
    name = req.get("model")
    if not isinstance(name, str) or not name:
        raise ValueError("field 'model' is required")
    if req.get("stream"):
        raise ValueError("streaming is not supported by flywheel's CPU server; send stream=false")
    if int(req.get("n") or 1) != 1:
        raise ValueError("only n=1 is supported")
    msgs = req.get("messages")
    if not isinstance(msgs, list) or not msgs or not all(isinstance(m, dict) and "role" in m for m in msgs):
        raise ValueError("field 'messages' must be a non-empty list of {role, content}")
    messages = [{"role": m["role"], "content": _text_of(m.get("content"))} for m in msgs]
    limit = req.get("max_completion_tokens") or req.get("max_tokens")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError("max_tokens must be a positive integer")
    return name, messages, limit


def parse_classify(req: dict) -> tuple[str, list[str]]:
    name = req.get("model")
    if not isinstance(name, str) or not name:
        raise ValueError("field 'model' is required")
    inp = req.get("input")
    texts = [inp] if isinstance(inp, str) else inp
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise ValueError("field 'input' must be a string or a non-empty list of strings")
    return name, texts


def rss_bytes() -> int:
    try:
        import psutil

        return psutil.Process(os.getpid()).memory_info().rss
    except Exception:  # pragma: no cover
        return 0


async def body(request: Request) -> dict:
    try:
        obj = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"the request body is not JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise ValueError("the request body must be a JSON object")
    return obj


def create_app(engine: Engine | None = None) -> Starlette:
    engine = engine or Engine()
    metrics = Metrics()
    started = int(time.time())

    def timed(endpoint: str):
        def wrap(fn):
            async def handler(request: Request):
                t0 = time.perf_counter()
                try:
                    resp = await fn(request)
                except AdapterNotFound as exc:
                    resp = error(404, str(exc), "NotFoundError")
                except AdapterConflict as exc:
                    resp = error(400, str(exc))
                except (AdapterError, ValueError, KeyError, TypeError) as exc:
                    resp = error(400, str(exc) if not isinstance(exc, KeyError) else f"missing field {exc}")
                except Exception as exc:  # a bug or a model failure: say so, keep serving
                    log.exception("%s failed", endpoint)
                    resp = error(500, f"{type(exc).__name__}: {exc}", "InternalServerError")
                metrics.observe(endpoint, resp.status_code, time.perf_counter() - t0)
                return resp
            return handler
        return wrap

    @timed("models")
    async def models(request: Request):
        data, seen = [], set()
        for name in engine.names():
            try:
                info = engine.info(name)
            except AdapterNotFound:
                continue
            if info.base_model not in seen:
                seen.add(info.base_model)
                data.append({"id": info.base_model, "object": "model", "created": started, "owned_by": "flywheel",
                             "root": info.base_model, "parent": None})
            data.append({"id": name, "object": "model", "created": int(engine.loaded_at.get(name, started)),
                         "owned_by": "flywheel", "root": str(info.path), "parent": info.base_model,
                         "flywheel": {"student": info.student}})
        return JSON({"object": "list", "data": data})

    @timed("chat")
    async def chat(request: Request):
        name, messages, limit = parse_chat(await body(request))
        out = await asyncio.to_thread(engine.chat, name, messages, limit)
        return JSON(chat_response(name, out))

    @timed("classify")
    async def classify(request: Request):
        name, texts = parse_classify(await body(request))
        out = await asyncio.to_thread(engine.classify, name, texts)
        return JSON(classify_response(name, out))

    @timed("load_lora_adapter")
    async def load_adapter(request: Request):
        req = await body(request)
        name, path = req.get("lora_name"), req.get("lora_path")
        if not isinstance(name, str) or not name or not isinstance(path, str) or not path:
            raise ValueError("both 'lora_name' and 'lora_path' are required")
        added = await asyncio.to_thread(engine.load, name, path)
        if added:
            log.info("loaded adapter %s from %s", name, path)
            return PlainTextResponse(f"Success: LoRA adapter '{name}' added successfully.")
        return PlainTextResponse(f"Success: LoRA adapter '{name}' is already loaded.")

    @timed("unload_lora_adapter")
    async def unload_adapter(request: Request):
        req = await body(request)
        name = req.get("lora_name")
        if not isinstance(name, str) or not name:
            raise ValueError("'lora_name' is required")
        await asyncio.to_thread(engine.unload, name)
        log.info("unloaded adapter %s", name)
        return PlainTextResponse(f"Success: LoRA adapter '{name}' removed successfully.")

    async def health(request: Request):
        return Response(status_code=200)

    async def prom(request: Request):
        extra = {"flywheel_serve_adapters_loaded": len(engine.names()),
                 "flywheel_serve_base_models_loaded": len(engine.bases()),
                 "process_resident_memory_bytes": rss_bytes()}
        return PlainTextResponse(metrics.render(extra))

    app = Starlette(routes=[
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/classify", classify, methods=["POST"]),
        Route("/v1/classify", classify, methods=["POST"]),
        Route("/v1/load_lora_adapter", load_adapter, methods=["POST"]),
        Route("/v1/unload_lora_adapter", unload_adapter, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", prom, methods=["GET"]),
    ])
    app.state.engine = engine
    app.state.metrics = metrics
    return app
