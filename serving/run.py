"""Running `flywheel serve`: the router (public port) and, by default, the CPU model server
(its own port) in one process, sharing one engine; model.config followed, live.requests published.

    flywheel serve                                   router :8000 + model server :8001, in-process engine
    flywheel serve --backend causal_lm=http://vllm:8000 --backend encoder_classifier=http://cpu:8001 --model-port 0
                                                     router only, talking to vLLM / remote model servers
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass, field

from .engine import KINDS, Engine
from .live import LivePublisher
from .router import EngineBackend, HttpBackend, Router, create_router_app, follow_config
from .server import create_app

log = logging.getLogger("flywheel.serve")


@dataclass
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    model_port: int | None = 8001             # None or 0: no model server port
    backends: dict[str, str] = field(default_factory=dict)   # student kind -> URL; missing: in-process
    max_adapters: int = 8
    publish: bool = True
    api_key: str | None = None


def parse_backends(values: tuple[str, ...] | list[str]) -> dict[str, str]:
    """``URL`` (every student kind) or ``KIND=URL``; ValueError naming the fix."""
    out: dict[str, str] = {}
    for v in values:
        kind, sep, url = v.partition("=")
        if not sep:
            kind, url = "*", v
        if kind != "*" and kind not in KINDS:
            raise ValueError(f"--backend {v!r}: the kind must be one of {', '.join(KINDS)} (KIND=URL), "
                             "or give a bare URL")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"--backend {v!r}: give an http(s) URL, e.g. http://127.0.0.1:8001")
        for k in (KINDS if kind == "*" else (kind,)):
            out[k] = url
    return out


class _Server:
    """uvicorn.Server without its own signal handling (two servers share one process)."""

    def __init__(self, app, host: str, port: int) -> None:
        import uvicorn

        class Quiet(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self):
                yield

        self.server = Quiet(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off",
                                           access_log=False, timeout_keep_alive=30))

    async def serve(self) -> None:
        await self.server.serve()

    def stop(self) -> None:
        self.server.should_exit = True

    @property
    def started(self) -> bool:
        return self.server.started


async def serve(settings, opts: ServeOptions, stop: asyncio.Event | None = None,
                started: asyncio.Event | None = None, engine: Engine | None = None) -> None:
    stop = stop or asyncio.Event()
    engine = engine or Engine()
    backends = {}
    http = {url: HttpBackend(url, api_key=opts.api_key) for url in set(opts.backends.values())}
    local = EngineBackend(engine)
    for kind in KINDS:
        backends[kind] = http[opts.backends[kind]] if kind in opts.backends else local
    publisher = LivePublisher(settings.kafka) if opts.publish else None
    router = Router(backends, publisher, max_adapters=opts.max_adapters)
    servers = [_Server(create_router_app(router), opts.host, opts.port)]
    if opts.model_port:
        servers.append(_Server(create_app(engine), opts.host, opts.model_port))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    if publisher:
        publisher.start()
    ready = asyncio.Event()
    follower = asyncio.create_task(follow_config(router, settings.kafka, ready), name="model-config")
    try:
        await asyncio.wait_for(ready.wait(), 30)
    except asyncio.TimeoutError:
        log.warning("model.config not read within 30 s; serving what is known and following it")
    tasks = [asyncio.create_task(s.serve()) for s in servers]
    while not all(s.started for s in servers):
        if any(t.done() for t in tasks):
            for t in tasks:
                if t.done() and t.exception():
                    raise t.exception()
            raise RuntimeError("a server stopped at start-up (is the port free?)")
        await asyncio.sleep(0.05)
    where = f"router http://{opts.host}:{opts.port}"
    if opts.model_port:
        where += f", model server http://{opts.host}:{opts.model_port}"
    log.info("serving: %s; tasks %s", where, sorted(router.routes) or "none yet (promote a version)")
    print(f"flywheel serve: {where} (Ctrl-C stops)", flush=True)
    if started is not None:
        started.set()
    try:
        await stop.wait()
    finally:
        for s in servers:
            s.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)
        if publisher:
            await publisher.stop()
        for b in http.values():
            await b.close()
