"""The router: a request names a task and is answered by the task's serving version.

    client ──{"model": "<task>"}──▶ router ──{"model": "<version>"}──▶ model server (flywheel or vLLM)
                                      │
                                      └── live.requests (batched, off the response path)

* Routing state comes from ``model.config`` (one record per task, the highest revision wins;
  the topic is read from the beginning, since the embedded broker does not compact). A new
  record is applied only once every version it names is loaded (and a newly loaded adapter has
  answered a warm-up request), then swapped in at once: requests never see a half-applied
  record and never fail because of one.
* ``model`` may also name a version explicitly (``"<task>-v3-1a2b3c4d"``). Every answer says
  which version answered: the ``x-flywheel-version`` header and the ``model_version`` field.
* Backends per student kind: the in-process engine (the embedded default), or a model server
  over HTTP speaking vLLM's API (vLLM with ``--enable-lora`` for causal students; a flywheel
  model server for the classifier students: encoder_classifier, encoder_full, embedding_head).
  Adapter names are the immutable version names.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any, Protocol

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route as HttpRoute

from . import config as cfg
from .config import ConfigError, Route, VersionRef
from .engine import CAUSAL, CLASSIFIERS, AdapterNotFound, Engine
from .live import LivePublisher, live_record
from .server import JSON, body, chat_response, classify_response, error, parse_chat, parse_classify

log = logging.getLogger("flywheel.router")

VERSION_HEADER = "x-flywheel-version"


class BackendError(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Backend(Protocol):
    name: str

    async def load(self, version: str, path: str) -> bool: ...
    async def unload(self, version: str) -> None: ...
    async def classify(self, version: str, texts: list[str]) -> dict: ...
    async def chat(self, version: str, messages: list[dict], max_tokens: int | None) -> dict: ...
    async def close(self) -> None: ...


class EngineBackend:
    """The model server's engine, called in-process (no HTTP hop)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.name = "in-process"

    async def load(self, version: str, path: str) -> bool:
        return await asyncio.to_thread(self.engine.load, version, path)

    async def unload(self, version: str) -> None:
        try:
            await asyncio.to_thread(self.engine.unload, version)
        except AdapterNotFound:
            pass

    async def classify(self, version: str, texts: list[str]) -> dict:
        return classify_response(version, await asyncio.to_thread(self.engine.classify, version, texts))

    async def chat(self, version: str, messages: list[dict], max_tokens: int | None) -> dict:
        return chat_response(version, await asyncio.to_thread(self.engine.chat, version, messages, max_tokens))

    async def close(self) -> None:
        pass


class HttpBackend:
    """A model server over HTTP speaking vLLM's OpenAI-compatible API (vLLM or `flywheel serve`)."""

    def __init__(self, url: str, timeout_s: float = 120.0, api_key: str | None = None) -> None:
        import httpx

        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self.name = url
        self.client = httpx.AsyncClient(base_url=url.rstrip("/"), timeout=timeout_s, headers=headers,
                                        limits=httpx.Limits(max_connections=64, max_keepalive_connections=32))

    async def _post(self, path: str, payload: dict) -> Any:
        r = await self.client.post(path, content=orjson.dumps(payload),
                                   headers={"content-type": "application/json"})
        if r.status_code >= 400:
            try:
                msg = r.json().get("error", {}).get("message") or r.text
            except Exception:
                msg = r.text
            raise BackendError(r.status_code, f"{self.name}{path}: {msg}")
        ctype = r.headers.get("content-type", "")
        return orjson.loads(r.content) if "json" in ctype else r.text

    async def load(self, version: str, path: str) -> bool:
        try:
            out = await self._post("/v1/load_lora_adapter", {"lora_name": version, "lora_path": path})
        except BackendError as exc:
            if "already been loaded" in str(exc):   # vLLM's answer for a name it holds
                return False
            raise
        return "already" not in str(out)

    async def unload(self, version: str) -> None:
        try:
            await self._post("/v1/unload_lora_adapter", {"lora_name": version})
        except BackendError as exc:
            if exc.status != 404 and "cannot be found" not in str(exc):
                raise

    async def classify(self, version: str, texts: list[str]) -> dict:
        return await self._post("/classify", {"model": version, "input": texts})

    async def chat(self, version: str, messages: list[dict], max_tokens: int | None) -> dict:
        payload: dict = {"model": version, "messages": messages, "temperature": 0.0}
        if max_tokens:
            payload["max_tokens"] = max_tokens
        return await self._post("/v1/chat/completions", payload)

    async def close(self) -> None:
        await self.client.aclose()


class RouterError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Router:
    """Routing state, adapter loading and the request path (HTTP glue in ``create_router_app``)."""

    def __init__(self, backends: dict[str, Backend], publisher: LivePublisher | None = None,
                 max_adapters: int = 8, warm_up: bool = True) -> None:
        self.backends = backends
        self.publisher = publisher
        self.max_adapters = max_adapters
        self.warm_up = warm_up
        self.routes: dict[str, Route] = {}
        self.known: dict[str, tuple[str, VersionRef]] = {}   # version -> (task, ref)
        self.loaded: list[str] = []                         # in load order
        self.pending: dict[str, Route] = {}                 # records waiting for their adapters
        # failed: the router or a model server could not answer; rejected: a bad request
        # (unknown task or version, wrong endpoint for the student, malformed body)
        self.counters = {"requests": 0, "failed": 0, "rejected": 0, "config_applied": 0, "config_ignored": 0,
                         "config_invalid": 0, "config_load_failed": 0}
        self.applied_at: dict[str, float] = {}
        self._apply_lock = asyncio.Lock()

    # ------------------------------------------------------------------ config
    def backend_for(self, student: str) -> Backend:
        b = self.backends.get(student)
        if b is None:
            raise RouterError(503, f"no model server configured for {student} students "
                                   "(flywheel serve --backend KIND=URL)")
        return b

    async def ensure_loaded(self, ref: VersionRef) -> None:
        if ref.version in self.loaded:
            return
        backend = self.backend_for(ref.student)
        added = await backend.load(ref.version, ref.adapter_uri)
        if added and self.warm_up:
            await self._warm(backend, ref)
        self.loaded.append(ref.version)
        log.info("adapter %s loaded on %s%s", ref.version, backend.name, " and warmed up" if added else "")

    async def _warm(self, backend: Backend, ref: VersionRef) -> None:
        if ref.student in CLASSIFIERS:
            await backend.classify(ref.version, ["warm-up"])
        else:
            await backend.chat(ref.version, self.messages(ref, "warm-up"), 1)

    async def apply(self, route: Route) -> bool:
        """Load what the record names, then swap it in. False if stale or a replay."""
        async with self._apply_lock:
            _, changed = cfg.apply(self.routes, route)
            if not changed:
                self.counters["config_ignored"] += 1
                return False
            for v in route.named():
                await self.ensure_loaded(route.versions[v])
            routes, _ = cfg.apply(self.routes, route)
            for v, ref in route.versions.items():
                self.known[v] = (route.task, ref)
            self.routes = routes                      # the swap: one assignment
            self.pending.pop(route.task, None)
            self.counters["config_applied"] += 1
            self.applied_at[route.task] = time.time()
            log.info("task %s: %s serves (revision %d, %s by %s)", route.task, route.serving, route.revision,
                     route.action or "config", route.decided_by or "?")
            await self._evict()
            return True

    async def _evict(self) -> None:
        for v in cfg.evictable(self.loaded, self.routes, self.max_adapters):
            task_ref = self.known.get(v)
            try:
                if task_ref is not None:
                    await self.backend_for(task_ref[1].student).unload(v)
                self.loaded.remove(v)
            except Exception as exc:
                log.warning("unloading %s failed (%s); it stays loaded", v, exc)

    async def offer_record(self, raw: bytes | None) -> None:
        """One model.config message: decode, apply (never raises)."""
        try:
            route = cfg.decode_record(raw)
        except ConfigError as exc:
            self.counters["config_invalid"] += 1
            log.error("ignoring an invalid model.config record: %s", exc)
            return
        await self.offer(route)

    async def offer(self, route: Route) -> None:
        try:
            await self.apply(route)
        except Exception as exc:
            self.counters["config_load_failed"] += 1
            cur = self.routes.get(route.task)
            if cur is None or route.revision > cur.revision:
                self.pending[route.task] = route
            log.error("task %s revision %d not applied (%s); %s keeps serving, retrying", route.task,
                      route.revision, exc, cur.serving if cur else "nothing")

    async def retry_pending(self) -> None:
        for route in list(self.pending.values()):
            await self.offer(route)

    # ------------------------------------------------------------------ requests
    def resolve(self, model: str) -> tuple[str, VersionRef]:
        """(task, version) answering a request for ``model``: a task's serving version, or a
        version named explicitly."""
        route = self.routes.get(model)
        if route is not None:
            if not route.serving:
                raise RouterError(503, f"task {model!r} has no serving version; "
                                       f"`flywheel promote --task {model} --model VERSION`")
            return model, route.versions[route.serving]
        hit = self.known.get(model)
        if hit is not None:
            return hit
        raise RouterError(404, f"no task or version named {model!r}; tasks with a serving version: "
                               f"{sorted(self.routes)}")

    @staticmethod
    def messages(ref: VersionRef, text: str) -> list[dict]:
        return [{"role": "system", "content": ref.system_prompt or ""}, {"role": "user", "content": text}]

    async def _loaded(self, ref: VersionRef) -> None:
        if ref.version not in self.loaded:     # an explicit version no route keeps loaded
            await self.ensure_loaded(ref)

    def _publish(self, task: str, version: str, inputs: list[str], outputs: list[Any], t0: float,
                 request_id: str) -> None:
        if self.publisher is None:
            return
        ms = (time.perf_counter() - t0) * 1000
        for i, (x, y) in enumerate(zip(inputs, outputs)):
            rid = request_id if len(inputs) == 1 else f"{request_id}-{i}"
            self.publisher.offer(live_record(id=rid, task=task, input=x, output=y, model_version=version,
                                             latency_ms=ms))

    async def classify(self, model: str, texts: list[str], request_id: str) -> tuple[dict, str]:
        t0 = time.perf_counter()
        task, ref = self.resolve(model)
        if ref.student not in CLASSIFIERS:
            raise RouterError(400, f"{model!r} is served by a {ref.student} student: use /v1/chat/completions")
        await self._loaded(ref)
        out = await self.backend_for(ref.student).classify(ref.version, texts)
        self._publish(task, ref.version, texts, [d["label"] for d in out["data"]], t0, request_id)
        return out, ref.version

    async def chat(self, model: str, messages: list[dict], max_tokens: int | None, request_id: str
                   ) -> tuple[dict, str]:
        t0 = time.perf_counter()
        task, ref = self.resolve(model)
        if ref.student != CAUSAL:
            raise RouterError(400, f"{model!r} is served by an {ref.student} student: use /classify")
        await self._loaded(ref)
        if not any(m.get("role") == "system" for m in messages) and ref.system_prompt:
            messages = [{"role": "system", "content": ref.system_prompt}] + messages
        out = await self.backend_for(ref.student).chat(ref.version, messages, max_tokens or ref.max_new_tokens)
        users = [m["content"] for m in messages if m.get("role") == "user"]
        answer = out["choices"][0]["message"]["content"]
        self._publish(task, ref.version, [users[-1] if users else ""], [answer], t0, request_id)
        return out, ref.version

    async def predict(self, model: str, texts: list[str], request_id: str) -> tuple[list[Any], str, str]:
        """Outputs for texts from the version answering ``model`` (the gate's prompt for causal)."""
        task, ref = self.resolve(model)
        if ref.student in CLASSIFIERS:
            out, v = await self.classify(model, texts, request_id)
            return [d["label"] for d in out["data"]], v, task
        answers = []
        for i, t in enumerate(texts):
            rid = request_id if len(texts) == 1 else f"{request_id}-{i}"
            out, v = await self.chat(model, self.messages(ref, t), ref.max_new_tokens, rid)
            answers.append(out["choices"][0]["message"]["content"])
        return answers, ref.version, task

    def state(self) -> dict[str, Any]:
        return {"routes": {t: {**r.to_record(), "applied_at": self.applied_at.get(t)} for t, r in self.routes.items()},
                "pending": {t: r.revision for t, r in self.pending.items()}, "loaded": list(self.loaded),
                "counters": dict(self.counters),
                "live": self.publisher.stats() if self.publisher else None}


# ---------------------------------------------------------------------- following model.config

async def follow_config(router: Router, kafka, ready: asyncio.Event | None = None, topic: str = "model.config",
                        poll_ms: int = 100) -> None:
    """Read model.config from the beginning and apply each record; reconnect forever on errors.
    ``ready`` is set once the records present at start have been read (or the broker is down)."""
    from aiokafka import AIOKafkaConsumer

    backoff = 0.5
    while True:
        consumer = AIOKafkaConsumer(topic, **kafka.aiokafka_kwargs(), group_id=None, enable_auto_commit=False,
                                    auto_offset_reset="earliest", fetch_max_wait_ms=poll_ms,
                                    request_timeout_ms=10000, metadata_max_age_ms=5000)
        try:
            await consumer.start()
            backoff = 0.5
            caught_up = False
            last_retry = time.monotonic()
            while True:
                batch = await consumer.getmany(timeout_ms=poll_ms, max_records=500)
                msgs = sorted((m for ms in batch.values() for m in ms), key=lambda m: (m.partition, m.offset))
                for m in msgs:
                    await router.offer_record(m.value)
                if not msgs and not caught_up:
                    caught_up = True
                    if ready is not None:
                        ready.set()
                if router.pending and time.monotonic() - last_retry > 2.0:
                    last_retry = time.monotonic()
                    await router.retry_pending()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("model.config unreachable (%s); keeping the current routes, retrying in %.1fs", exc, backoff)
            if ready is not None:
                ready.set()
            await asyncio.sleep(backoff)
            backoff = min(10.0, backoff * 2)
        finally:
            try:
                await asyncio.wait_for(consumer.stop(), 5)
            except Exception:
                pass


# ---------------------------------------------------------------------- HTTP

def create_router_app(router: Router) -> Starlette:
    async def guarded(request: Request, fn) -> Response:
        router.counters["requests"] += 1
        try:
            return await fn(await body(request), request.headers.get("x-request-id") or uuid.uuid4().hex)
        except RouterError as exc:
            router.counters["failed" if exc.status >= 500 else "rejected"] += 1
            return error(exc.status, str(exc), "NotFoundError" if exc.status == 404 else "BadRequestError")
        except BackendError as exc:
            router.counters["failed"] += 1
            return error(exc.status if exc.status < 500 else 502, str(exc))
        except (ValueError, KeyError, TypeError) as exc:
            router.counters["rejected"] += 1
            return error(400, str(exc))
        except Exception as exc:
            router.counters["failed"] += 1
            log.exception("request failed")
            return error(502, f"{type(exc).__name__}: {exc}", "BackendError")

    def answered(out: dict, version: str, task: str | None = None) -> Response:
        out = {**out, "model": version, "model_version": version}
        if task:
            out["task"] = task
        return JSON(out, headers={VERSION_HEADER: version})

    async def chat(request: Request) -> Response:
        async def run(req, rid):
            model, messages, limit = parse_chat(req)
            out, v = await router.chat(model, messages, limit, rid)
            return answered(out, v)
        return await guarded(request, run)

    async def classify(request: Request) -> Response:
        async def run(req, rid):
            model, texts = parse_classify(req)
            out, v = await router.classify(model, texts, rid)
            return answered(out, v)
        return await guarded(request, run)

    async def predict(request: Request) -> Response:
        async def run(req, rid):
            model = req.get("model") or req.get("task")
            inp = req.get("input")
            texts = [inp] if isinstance(inp, str) else inp
            if not isinstance(model, str) or not model:
                raise ValueError("field 'model' (a task or a version) is required")
            if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
                raise ValueError("field 'input' must be a string or a non-empty list of strings")
            outputs, v, task = await router.predict(model, texts, rid)
            return answered({"object": "flywheel.prediction", "outputs": outputs}, v, task)
        return await guarded(request, run)

    async def models(request: Request) -> Response:
        data = [{"id": t, "object": "model", "owned_by": "flywheel", "root": r.serving, "parent": None,
                 "flywheel": {"kind": "task", "serving_version": r.serving, "revision": r.revision}}
                for t, r in router.routes.items()]
        data += [{"id": v, "object": "model", "owned_by": "flywheel", "root": ref.adapter_uri, "parent": t,
                  "flywheel": {"kind": "version", "student": ref.student}} for v, (t, ref) in router.known.items()]
        return JSON({"object": "list", "data": data})

    async def routes(request: Request) -> Response:
        return JSON(router.state())

    async def health(request: Request) -> Response:
        return Response(status_code=200)

    async def metrics(request: Request) -> Response:
        lines = []
        for k, v in router.counters.items():
            lines.append(f"flywheel_router_{k}_total {v}")
        if router.publisher is not None:
            s = router.publisher.stats()
            lines += [f"flywheel_live_published_total {s['published']}",
                      f"flywheel_live_unpublished_total {s['unpublished']}",
                      f"flywheel_live_queued {s['queued']}",
                      f"flywheel_live_broker_connected {int(s['connected'])}"]
        for t, r in router.routes.items():
            lines.append(f'flywheel_router_config_revision{{task="{t}"}} {r.revision}')
        lines.append(f"flywheel_router_adapters_loaded {len(router.loaded)}")
        return PlainTextResponse("\n".join(lines) + "\n")

    return Starlette(routes=[
        HttpRoute("/v1/chat/completions", chat, methods=["POST"]),
        HttpRoute("/classify", classify, methods=["POST"]),
        HttpRoute("/v1/classify", classify, methods=["POST"]),
        HttpRoute("/v1/predict", predict, methods=["POST"]),
        HttpRoute("/v1/models", models, methods=["GET"]),
        HttpRoute("/v1/flywheel/routes", routes, methods=["GET"]),
        HttpRoute("/health", health, methods=["GET"]),
        HttpRoute("/metrics", metrics, methods=["GET"]),
    ])
