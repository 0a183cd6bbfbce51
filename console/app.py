"""The console: one ASGI app (Starlette), server-rendered pages, assets served from this package.

Pages: ``/`` (tasks), ``/review/<task>`` (the keyboard-driven review page), ``/overview/<task>``
(the loop at a glance). Forms: a verdict, the reviewer's name, gold growth; each is
CSRF-protected. A verdict is published on ``review.verdicts`` like any other tool's: the review
agent of the stream worker applies it, so the console holds no state that matters.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import quote, urlencode

import orjson
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from console import canary as canary_panel
from console import charts, queries
from console.security import AUTH_COOKIE, Guard, csrf_ok, csrf_token
from kernel.gold import GOLD_SOURCES
from kernel.tasks import TaskConfig, label_of, output_problem
from kernel.warehouse import Warehouse
from schemas.events import validate
from schemas.timefmt import rfc3339

log = logging.getLogger("flywheel.console")
HERE = Path(__file__).parent
REVIEWER_COOKIE = "fw_reviewer"
_REVIEWER = re.compile(r"^[\w .@+-]{1,64}$")
RECENT_SECONDS = 300.0  # how long a sent verdict hides its item while the agent applies it

Publish = Callable[[dict], Awaitable[None]]


@dataclass
class Console:
    tasks: dict[str, TaskConfig]
    store: Warehouse
    publish: Publish
    token: str | None = None
    kafka: Any = None  # KafkaSettings: where a rollback publishes model.config (None: rollback unavailable)
    recent: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)

    def skip_list(self, task: str, reviewer: str) -> list[str]:
        now = time.monotonic()
        got = self.recent.get((task, reviewer), {})
        for k in [k for k, t in got.items() if now - t > RECENT_SECONDS]:
            del got[k]
        return list(got)

    def mark_sent(self, task: str, reviewer: str, item_id: str) -> None:
        self.recent.setdefault((task, reviewer), {})[item_id] = time.monotonic()


def build_app(console: Console, *, on_startup=(), on_shutdown=()) -> Any:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))

    def render(request: Request, name: str, status: int = 200, **ctx) -> HTMLResponse:
        ctx.update(csrf=csrf_token(request), tasks=sorted(console.tasks), reviewer=reviewer_of(request),
                   token_mode=bool(console.token))
        return HTMLResponse(env.get_template(name).render(**ctx), status_code=status)

    def task_of(request: Request) -> TaskConfig:
        name = request.path_params["task"]
        if name not in console.tasks:
            raise _NotFound(f"unknown task {name!r}; declared: {', '.join(sorted(console.tasks))}")
        return console.tasks[name]

    async def db(fn, *args):
        return await asyncio.to_thread(fn, console.store, *args)

    async def index(request: Request) -> Response:
        counts = {}
        for name in sorted(console.tasks):
            counts[name] = await db(queries.review_counts, name)
        return render(request, "index.html", counts=counts)

    async def login(request: Request) -> Response:
        if request.method == "POST":
            form = await request.form()
            if not csrf_ok(request, form.get("csrf")):
                return PlainTextResponse("bad or missing CSRF token: reload the page and try again", 403)
            given = str(form.get("token") or "")
            import secrets

            if console.token and secrets.compare_digest(given.encode(), console.token.encode()):
                resp = RedirectResponse("/", status_code=303)
                resp.set_cookie(AUTH_COOKIE, given, httponly=True, samesite="strict")
                return resp
            return render(request, "login.html", status=401, error="wrong token")
        return render(request, "login.html")

    async def set_reviewer(request: Request) -> Response:
        form = await request.form()
        if not csrf_ok(request, form.get("csrf")):
            return PlainTextResponse("bad or missing CSRF token: reload the page and try again", 403)
        name = str(form.get("reviewer") or "").strip()
        back = _local_path(str(form.get("next") or "/"))
        if not _REVIEWER.match(name):
            return PlainTextResponse("a reviewer name is 1-64 letters, digits, spaces or . @ + - _", 400)
        resp = RedirectResponse(back, status_code=303)
        resp.set_cookie(REVIEWER_COOKIE, quote(name), httponly=True, samesite="strict", max_age=86400 * 365)
        return resp

    async def review_page(request: Request, error: str | None = None, item_override: dict | None = None) -> Response:
        task = task_of(request)
        who = reviewer_of(request)
        counts = await db(queries.review_counts, task.name)
        if not who:
            return render(request, "review.html", task=task, item=None, counts=counts, need_name=True,
                          next_url=str(request.url.path))
        after = _cursor(request.query_params.get("after"))
        item = item_override or await db(queries.next_pending, task.name, who, after,
                                         console.skip_list(task.name, who))
        wrapped = False
        if item is None and after is not None:  # end of the queue: start over from the oldest
            item = await db(queries.next_pending, task.name, who, None, console.skip_list(task.name, who))
            wrapped = item is not None
        options = _options(task, item) if item else []
        return render(request, "review.html", status=400 if error else 200, task=task, item=item, counts=counts,
                      options=options, error=error, wrapped=wrapped, saved=request.query_params.get("saved"),
                      grown=request.query_params.get("grown"), need_name=False,
                      cursor=f"{item['arrived']}|{item['item_id']}" if item else "",
                      teacher_json=_pretty(item["answers"].get("teacher")) if item and task.is_extraction else "")

    async def verdict(request: Request) -> Response:
        task = task_of(request)
        form = await request.form()
        if not csrf_ok(request, form.get("csrf")):
            return PlainTextResponse("bad or missing CSRF token: reload the page and try again", 403)
        who = reviewer_of(request)
        if not who:
            return RedirectResponse(f"/review/{task.name}", status_code=303)
        item_id = str(form.get("item_id") or "")
        action = str(form.get("action") or "submit")
        cursor = str(form.get("cursor") or "")
        if action not in ("submit", "discard") or not item_id:
            return PlainTextResponse("a verdict needs item_id and action submit or discard", 400)
        answer: Any = None
        if action == "submit":
            raw = str(form.get("other") or "").strip() or str(form.get("answer") or "").strip()
            answer, problem = _answer(task, raw)
            if problem:
                item = await db(queries.item_by_id, task.name, item_id)
                return await review_page(request, error=problem, item_override=item)
        msg = {"verdict_id": f"console:{uuid.uuid4().hex}", "item_id": item_id, "task": task.name, "reviewer": who,
               "action": action, "decided_at": rfc3339(), "schema_version": 1}
        if action == "submit":
            msg["answer"] = answer
        note = str(form.get("note") or "").strip()
        if note:
            msg["note"] = note[:2000]
        validate("review.verdicts.schema.json", msg)
        try:
            await console.publish(msg)
        except Exception as exc:
            log.warning("could not publish a verdict: %s", exc)
            item = await db(queries.item_by_id, task.name, item_id)
            return await review_page(request, error=f"could not publish the verdict on review.verdicts ({exc}); "
                                                    "is the broker up? Nothing was recorded: try again",
                                     item_override=item)
        console.mark_sent(task.name, who, item_id)
        shown = "discarded" if action == "discard" else label_of(answer)
        qs = urlencode({"after": cursor, "saved": f"{item_id}: {shown}"})
        return RedirectResponse(f"/review/{task.name}?{qs}", status_code=303)

    async def grow_gold(request: Request) -> Response:
        task = task_of(request)
        form = await request.form()
        if not csrf_ok(request, form.get("csrf")):
            return PlainTextResponse("bad or missing CSRF token: reload the page and try again", 403)
        from streams.review.grow import grow

        try:
            res = await asyncio.to_thread(grow, console.store, task)
        except Exception as exc:  # noqa: BLE001 - e.g. another writer holds the version: a message, never a 500
            log.warning("gold growth of %s from the console failed: %s", task.name, exc)
            return await overview(request, f"gold growth failed: {exc}", 409)
        back = _local_path(str(form.get("back") or f"/overview/{task.name}"))
        sep = "&" if "?" in back else "?"
        return RedirectResponse(f"{back}{sep}{urlencode({'grown': res.summary()})}", status_code=303)

    async def overview(request: Request, error: str | None = None, status: int = 200,
                       form_reason: str = "") -> Response:
        task = task_of(request)
        data = await asyncio.to_thread(_overview_data, console.store, task)
        return render(request, "overview.html", status=status, task=task, grown=request.query_params.get("grown"),
                      rolled=request.query_params.get("rolled"), error=error, can_rollback=console.kafka is not None,
                      form_reason=form_reason, **data)

    async def rollback(request: Request) -> Response:
        """The guarded rollback button: the operator types the task name to confirm; the decision
        is streams.promote's (the same as `flywheel rollback`), so its rules are checked again
        here and a refusal is shown as a message."""
        task = task_of(request)
        form = await request.form()
        if not csrf_ok(request, form.get("csrf")):
            return PlainTextResponse("bad or missing CSRF token: reload the page and try again", 403)
        typed = str(form.get("reason") or "").strip()[:500]
        operator = str(form.get("operator") or "").strip() or (reviewer_of(request) or "")
        if not _REVIEWER.match(operator):
            return await overview(request, "a rollback needs your name (1-64 letters, digits, spaces or . @ + - _): "
                                           "it is recorded in the promotion history", 400, typed)
        if str(form.get("confirm") or "").strip() != task.name:
            return await overview(request, f"not rolled back: type the task name {task.name!r} in the box to confirm",
                                  400, typed)
        if console.kafka is None:
            return await overview(request, "this console has no broker settings, so it cannot publish model.config; "
                                           f"use `flywheel rollback --task {task.name}`", 503)
        from kernel.lifecycle import TransitionError
        from streams.promote.apply import apply
        from streams.promote.policy import PromotionError

        reason = typed or "rolled back from the console"
        try:
            d = await asyncio.wait_for(apply(console.store, console.kafka, "rollback", task.name,
                                             decided_by=f"{operator} (console)", reason=reason), 60)
        except (PromotionError, TransitionError) as exc:
            return await overview(request, f"rollback refused: {exc}", 409)
        except Exception as exc:  # noqa: BLE001 - broker or store trouble: a message, never a 500
            log.warning("rollback of %s from the console failed: %s", task.name, exc)
            return await overview(request, f"rollback failed ({type(exc).__name__}: {exc}); if model.config could not "
                                           "be published nothing changed: check the broker and try again, or use "
                                           f"`flywheel rollback --task {task.name}`", 503)
        log.info("rollback of %s to %s by %s from the console (revision %s)", task.name, d.version, operator,
                 d.route.revision)
        msg = f"rolled back to {d.version} (revision {d.route.revision}) by {operator}"
        return RedirectResponse(f"/overview/{task.name}?{urlencode({'rolled': msg})}", status_code=303)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    routes = [
        Route("/", index), Route("/login", login, methods=["GET", "POST"]),
        Route("/reviewer", set_reviewer, methods=["POST"]), Route("/healthz", healthz),
        Route("/review/{task}", review_page), Route("/review/{task}/verdict", verdict, methods=["POST"]),
        Route("/gold/{task}/grow", grow_gold, methods=["POST"]), Route("/overview/{task}", overview),
        Route("/promote/{task}/rollback", rollback, methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    @contextlib.asynccontextmanager
    async def lifespan(app):
        for fn in on_startup:
            await fn()
        try:
            yield
        finally:
            for fn in on_shutdown:
                await fn()

    app = Starlette(routes=routes, exception_handlers={_NotFound: _not_found}, lifespan=lifespan)
    return Guard(app, console.token)


class _NotFound(Exception):
    pass


async def _not_found(request: Request, exc: Exception) -> Response:
    return PlainTextResponse(str(exc), status_code=404)


def reviewer_of(request: Request) -> str | None:
    from urllib.parse import unquote

    raw = unquote(request.cookies.get(REVIEWER_COOKIE, ""))
    return raw if _REVIEWER.match(raw or "") else None


def _local_path(value: str) -> str:
    """``value`` when it is a path on this site, else "/" (a redirect never leaves the console)."""
    # browsers read "/\\host" like "//host" (another site), so a backslash or a control
    # character anywhere sends the redirect home
    safe = value.startswith("/") and not value.startswith("//") and not any(c == "\\" or ord(c) < 32 for c in value)
    return value if safe else "/"


def _cursor(value: str | None) -> tuple[str, str] | None:
    if not value or "|" not in value:
        return None
    at, item = value.split("|", 1)
    return (at, item) if re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)?$", at) else None


def _pretty(value: Any) -> str:
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()


def _options(task: TaskConfig, item: dict) -> list[dict]:
    """The choices on the review page: the answers shown first (with who gave them), then the
    task's other labels; the first ten get the keys 1..9, 0."""
    opts: list[dict] = []
    seen: dict[str, dict] = {}
    for who, ans in item["answers"].items():
        value = label_of(ans) if not isinstance(ans, str) else ans
        if value in seen:
            seen[value]["who"].append(who)
            continue
        seen[value] = {"value": value, "who": [who]}
        opts.append(seen[value])
    if task.labels:
        for label in task.labels:
            if label not in seen:
                opts.append({"value": label, "who": []})
    for i, o in enumerate(opts):
        o["key"] = str((i + 1) % 10) if i < 10 else ""
        o["display"] = o["value"] if not task.is_extraction else _pretty(o["value"])
    return opts


def _answer(task: TaskConfig, raw: str) -> tuple[Any, str | None]:
    if not raw:
        return None, "choose an answer (1-9), type another label (o), or discard (d)"
    value: Any = raw
    if task.is_extraction:
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return None, f"the answer must be a JSON object for this extraction task ({exc})"
    problem = output_problem(value, task)
    if problem and task.labels:
        problem += f"; labels are: {', '.join(task.labels)}"
    return value, problem


def _overview_data(store: Warehouse, task_cfg: TaskConfig) -> dict[str, Any]:
    t0 = time.perf_counter()
    task = task_cfg.name
    out: dict[str, Any] = {}
    rates = queries.curation_rates(store, task)
    xs = [r["window_start"][5:16] for r in rates]
    out["curation_chart"] = charts.line_chart(
        xs, {"kept": [r["kept_rate"] for r in rates], "low_conf": [r["low_conf_rate"] for r in rates],
             "off_schema": [r["off_schema_rate"] for r in rates]},
        title="Curation outcome rates per window", y_min=0, y_max=1)
    out["curation_total"] = sum(int(r["total"]) for r in rates)
    by_metric, alerts = queries.drift(store, task)
    drift_charts = []
    for metric, rows in sorted(by_metric.items()):
        mx = [r["window_start"][5:16] for r in rows]
        marks = [i for i, r in enumerate(rows) if int(r["alerts"] or 0) > 0]
        drift_charts.append(charts.line_chart(
            mx, {"value": [r["value"] for r in rows], "reference": [r["reference"] for r in rows]},
            title=f"drift: {metric}" + (f" ({len(marks)} alert windows)" if marks else ""), width=420, height=170,
            markers=marks))
    out["drift_charts"], out["alerts"] = drift_charts, alerts
    out["serving"] = queries.serving(store, task)
    out["models"] = queries.models(store, task)
    out["history"] = queries.promotion_history(store, task)
    gate = queries.last_gate(store, task)
    out["gate"] = gate
    if gate:
        v = gate["verdict"]
        out["gate_chart"] = charts.hbars(
            [("overall", v.get("overall", 0.0), v.get("baseline_overall"), "ok" if v.get("approved") else "rejected")]
            + [(s["slice"] or "(empty)", s["score"], s["baseline"], s["status"]) for s in v.get("slices", [])],
            title=f"score by slice on gold v{gate['gold_version']} (tick: baseline {gate['baseline']})")
        out["gate_sources"] = v.get("sources", [])
    gold = queries.gold(store, task)
    out["gold"] = gold
    sources = list(GOLD_SOURCES)
    sources += sorted({s for g in gold for s in g["sources"]} - set(sources))
    out["gold_chart"] = charts.stacked_bars(
        [f"v{g['version']}" for g in gold[-12:]],
        {s: [g["sources"].get(s, 0) for g in gold[-12:]] for s in sources},
        title="Gold versions by source")
    out["review_counts"] = queries.review_counts(store, task)
    out["routing_counts"], out["refused"] = queries.routing(store, task)
    out["canary"] = cp = canary_panel.panel(store, task_cfg)
    if cp and cp["windows"]:
        ws = cp["windows"]
        out["canary_chart"] = charts.line_chart(
            [w["w"][11:16] for w in ws],
            {"disagreement": [int(w["disagree"]) / int(w["pairs"]) if int(w["pairs"]) else None for w in ws],
             "max_disagreement": [cp["config"].max_disagreement] * len(ws)},
            title="Canary disagreement rate per minute", y_min=0, width=460, height=170)
    out["server_ms"] = (time.perf_counter() - t0) * 1000
    return out
