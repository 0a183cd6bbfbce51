"""The console's guards: a token when bound beyond loopback, CSRF on every form, strict headers.

* Token: when set, every request needs it, as the ``fw_auth`` cookie (set by /login, HttpOnly,
  SameSite=Strict) or an ``Authorization: Bearer`` header. Compared in constant time.
* CSRF: double submit. Every page sets a random ``fw_csrf`` cookie (HttpOnly, SameSite=Strict)
  and puts the same value in its forms; a POST whose form field does not match the cookie, or
  whose Origin names another host, is refused with 403.
* Headers: a Content-Security-Policy allowing only this origin (no inline script, no CDN),
  no framing, no MIME sniffing, no referrer.
"""

from __future__ import annotations

import ipaddress
import secrets
import time

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

CSRF_COOKIE = "fw_csrf"
AUTH_COOKIE = "fw_auth"
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def csrf_token(request: Request) -> str:
    """The CSRF value of this client (the cookie's, or a new one the response will set)."""
    tok = request.cookies.get(CSRF_COOKIE)
    if not tok or len(tok) < 20:
        tok = request.scope.setdefault("fw_new_csrf", secrets.token_urlsafe(24))
    return tok


def csrf_ok(request: Request, form_value: str | None) -> bool:
    cookie = request.cookies.get(CSRF_COOKIE)
    if not cookie or not form_value or not secrets.compare_digest(cookie, form_value):
        return False
    origin = request.headers.get("origin")
    if origin and origin != "null":
        host = request.headers.get("host", "")
        if origin.split("://", 1)[-1] != host:
            return False
    return True


def authorised(request: Request, token: str | None) -> bool:
    if not token:
        return True
    got = request.cookies.get(AUTH_COOKIE, "")
    auth = request.headers.get("authorization", "")
    if auth.startswith("Bearer "):
        got = auth[7:]
    return bool(got) and secrets.compare_digest(got.encode(), token.encode())


class Guard:
    """ASGI middleware: token check (except /login and /static), security headers, the CSRF
    cookie, and a Server-Timing header with the server's time for the request."""

    def __init__(self, app, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        request = Request(scope, receive)
        path = scope["path"]
        if self.token and not path.startswith(("/login", "/static/")) and not authorised(request, self.token):
            if request.method == "GET" and "text/html" in request.headers.get("accept", ""):
                resp: Response = RedirectResponse("/login", status_code=303)
            else:
                resp = PlainTextResponse("this console needs its token: open /login", status_code=401)
            return await resp(scope, receive, send)

        async def send_wrapped(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                for k, v in HEADERS.items():
                    headers.append((k.lower().encode(), v.encode()))
                new = scope.get("fw_new_csrf")
                if new:
                    headers.append((b"set-cookie", f"{CSRF_COOKIE}={new}; Path=/; HttpOnly; SameSite=Strict".encode()))
                ms = (time.perf_counter() - started) * 1000
                headers.append((b"server-timing", f"app;dur={ms:.1f}".encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_wrapped)
