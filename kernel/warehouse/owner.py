"""Serve the embedded store to other processes on loopback while this process owns it.

A small HTTP endpoint (POST /query, POST /insert) guarded by a random token that lives in
``<data_dir>/owner.json`` (mode 0600, replaced on every start, removed on a clean stop).
``flywheel sql``, ``flywheel gold import`` and the stream worker's child process use it through
RemoteWarehouse while ``flywheel up`` runs. Plain curl works too::

    curl -s -H "X-Flywheel-Token: $(jq -r .token .flywheel/owner.json)" \\
         --data-binary 'SELECT 1' "$(jq -r .url .flywheel/owner.json)/query?format=TSV&readonly=1"

What it withstands (tests/test_owner_endpoint.py): the token is checked before a byte of the
body is read; bodies need a Content-Length no larger than ``max_body``; a connection must send
its whole request within ``request_deadline`` seconds and may pause at most ``read_timeout``;
a fixed pool of ``max_workers`` threads serves requests, ``max_queue`` more connections may wait
for one, and a connection beyond those gets 503 at once (no thread per connection); every request is one connection (``Connection: close``).
Bad requests get 4xx, never 500; queries pass kernel.warehouse.guard (one statement, nothing
reaching files or URLs; ``readonly=1`` for reads only).
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from kernel.warehouse import Warehouse, WarehouseError

log = logging.getLogger(__name__)

MAX_BODY = 128 * 1024 * 1024
# Our own header limit: http.server relies on http.client._MAXHEADERS (100), a process-wide
# global that clickhouse-connect raises to 10,000 when it is imported.
MAX_HEADERS = 100
_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
_FORMAT = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 32\r\nRetry-After: 1\r\n"
         b"Connection: close\r\n\r\nstore endpoint busy: retry later")


class _Server(HTTPServer):
    """HTTPServer with a fixed worker pool and a deadline on reading each request."""

    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, addr, handler, *, max_workers: int, max_queue: int, request_deadline: float) -> None:
        super().__init__(addr, handler)
        self._pool = ThreadPoolExecutor(max_workers, thread_name_prefix="warehouse-owner")
        self._capacity = max_workers + max_queue
        self._slots = threading.BoundedSemaphore(self._capacity)
        self._deadline = request_deadline
        self._reading: dict[socket.socket, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.rejected = 0
        self._reaper = threading.Thread(target=self._reap, name="warehouse-owner-reaper", daemon=True)
        self._reaper.start()

    def process_request(self, request, client_address):
        # max_workers serve; up to max_queue more wait (a socket each, no thread); beyond: 503.
        # The read deadline starts at accept, so a stalled connection waiting in the queue is
        # cut when its time is up and never holds a worker for long.
        if not self._slots.acquire(blocking=False):
            self.rejected += 1
            try:
                request.settimeout(0.5)
                request.sendall(_BUSY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        self.watch(request)
        try:
            self._pool.submit(self._serve, request, client_address)
        except RuntimeError:  # the pool is shut down
            self.unwatch(request)
            self._slots.release()
            self.shutdown_request(request)

    def _serve(self, request, client_address):
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.unwatch(request)
            self.shutdown_request(request)
            self._slots.release()

    def handle_error(self, request, client_address):  # quiet: a peer that hangs up is normal
        log.debug("owner endpoint: connection from %s failed", client_address, exc_info=True)

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._reading[sock] = time.monotonic() + self._deadline

    def unwatch(self, sock: socket.socket) -> None:
        with self._lock:
            self._reading.pop(sock, None)

    def _reap(self) -> None:
        """Cut connections that have not sent their whole request in time (slow senders)."""
        while not self._stop.wait(0.25):
            now = time.monotonic()
            with self._lock:
                late = [s for s, deadline in self._reading.items() if deadline < now]
                for s in late:
                    self._reading.pop(s, None)
            for s in late:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def server_close(self):
        self._stop.set()
        super().server_close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    @property
    def busy(self) -> int:
        """Connections being served or waiting for a worker (for tests and metrics)."""
        return self._capacity - self._slots._value  # noqa: SLF001


class OwnerServer:
    def __init__(self, store: Warehouse, data_dir: Path, host: str = "127.0.0.1", port: int = 0, *,
                 max_workers: int = 8, max_queue: int = 32, max_body: int = MAX_BODY, read_timeout: float = 10.0,
                 request_deadline: float = 30.0) -> None:
        self.store = store
        self.data_dir = Path(data_dir)
        self.token = secrets.token_urlsafe(24)
        handler = _make_handler(store, self.token, max_body, read_timeout)
        self._httpd = _Server((host, port), handler, max_workers=max_workers, max_queue=max_queue,
                              request_deadline=request_deadline)
        self.url = f"http://{host}:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="warehouse-owner",
                                        daemon=True)

    @property
    def path(self) -> Path:
        return self.data_dir / "owner.json"

    @property
    def rejected(self) -> int:
        return self._httpd.rejected

    @property
    def busy(self) -> int:
        return self._httpd.busy

    def start(self) -> "OwnerServer":
        self._thread.start()
        write_owner_file(self.path, {"url": self.url, "token": self.token, "pid": os.getpid()})
        return self

    def stop(self) -> None:
        try:
            self.path.unlink(missing_ok=True)
        finally:
            self._httpd.shutdown()
            self._httpd.server_close()


def write_owner_file(path: Path, info: dict) -> None:
    """Write owner.json atomically, readable by this user only (a stale one is replaced)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(info, f)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _make_handler(store: Warehouse, token: str, max_body: int, read_timeout: float):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        default_request_version = "HTTP/1.1"  # error replies always carry a status line
        timeout = read_timeout  # seconds a read may block (StreamRequestHandler sets it on the socket)

        def log_message(self, fmt, *args):  # quiet; errors are logged below
            pass

        def parse_request(self) -> bool:
            if not super().parse_request():
                return False
            if len(self.headers) > MAX_HEADERS:
                self.close_connection = True
                self.send_error(431, f"more than {MAX_HEADERS} header lines")
                return False
            return True

        def _reply(self, code: int, body: bytes, extra: dict | None = None) -> None:
            self.close_connection = True
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Connection", "close")
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def _refuse(self, code: int, message: str) -> None:
            self.server.unwatch(self.connection)
            self._reply(code, message.encode())

        def do_GET(self):  # noqa: N802
            self._refuse(405, "use POST /query or POST /insert")

        do_PUT = do_DELETE = do_PATCH = do_HEAD = do_GET  # noqa: N815

        def _body(self) -> bytes | None:
            """The request body, or None after replying with the reason it is refused."""
            if self.headers.get("Transfer-Encoding"):
                self._refuse(411, "send the body with a Content-Length (no Transfer-Encoding)")
                return None
            raw = self.headers.get("Content-Length")
            if raw is None:
                self._refuse(411, "Content-Length required")
                return None
            try:
                length = int(raw)
                if length < 0:
                    raise ValueError
            except ValueError:
                self._refuse(400, f"bad Content-Length {raw[:40]!r}")
                return None
            if length > max_body:
                self._refuse(413, f"body of {length} bytes is over the limit of {max_body} bytes; "
                                  "send smaller batches")
                return None
            chunks, left = [], length
            while left > 0:
                chunk = self.rfile.read(min(left, 1 << 20))
                if not chunk:  # the peer hung up, or the reaper cut a slow sender
                    self.close_connection = True
                    return None
                chunks.append(chunk)
                left -= len(chunk)
            self.server.unwatch(self.connection)
            return b"".join(chunks)

        def do_POST(self):  # noqa: N802 - http.server naming
            url = urlparse(self.path)
            if url.path not in ("/query", "/insert"):
                self._refuse(404, "use POST /query or POST /insert")
                return
            if not secrets.compare_digest(self.headers.get("X-Flywheel-Token", "").encode(), token.encode()):
                self._refuse(401, "missing or wrong X-Flywheel-Token (see owner.json)")
                return
            try:
                qs = {k: v[0] for k, v in parse_qs(url.query, strict_parsing=False).items()}
            except ValueError:
                self._refuse(400, "bad query string")
                return
            fmt = qs.get("format", "JSONEachRow")
            if not _FORMAT.match(fmt):
                self._refuse(400, f"bad format name {fmt[:40]!r}")
                return
            body = self._body()
            if body is None:
                return
            try:
                if url.path == "/query":
                    try:
                        sql = body.decode("utf-8")
                    except UnicodeDecodeError as exc:
                        self._reply(400, f"the query is not UTF-8: {exc}".encode())
                        return
                    out = store.query_checked(sql, fmt, write=qs.get("readonly", "0") != "1")
                else:
                    table = qs.get("table", "")
                    if not _TABLE.match(table):
                        self._reply(400, f"bad or missing table name {table[:60]!r}".encode())
                        return
                    store.insert_raw(table, body, fmt, qs.get("token"))
                    out = b""
            except WarehouseError as exc:
                from kernel.warehouse.guard import QueryRefused

                self._reply(403 if isinstance(exc, QueryRefused) else 400, str(exc).encode())
                return
            except (UnicodeDecodeError, ValueError) as exc:
                self._reply(400, f"{type(exc).__name__}: {exc}".encode())
                return
            except Exception:  # never kill the serving thread; the details stay in this log
                log.exception("warehouse owner request failed")
                self._reply(500, b"internal error in the store owner; see its log")
                return
            self._reply(200, out)

    return Handler
