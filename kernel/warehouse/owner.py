"""Serve the embedded store to other processes on loopback while this process owns it.

A tiny HTTP endpoint (POST /query, POST /insert) guarded by a random token that lives in
``<data_dir>/owner.json`` (mode 0600). ``flywheel sql`` and ``flywheel gold import`` use it
through RemoteWarehouse while ``flywheel up`` runs. Plain curl works too::

    curl -s -H "X-Flywheel-Token: $(jq -r .token .flywheel/owner.json)" \
         --data-binary 'SELECT 1' "$(jq -r .url .flywheel/owner.json)/query?format=TSV"
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from kernel.warehouse import Warehouse, WarehouseError

log = logging.getLogger(__name__)


class OwnerServer:
    def __init__(self, store: Warehouse, data_dir: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.store = store
        self.data_dir = Path(data_dir)
        self.token = secrets.token_urlsafe(24)
        handler = _make_handler(store, self.token)
        self._httpd = ThreadingHTTPServer((host, port), handler)
        self._httpd.daemon_threads = True
        self.url = f"http://{host}:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="warehouse-owner",
                                        daemon=True)

    def start(self) -> "OwnerServer":
        self._thread.start()
        path = self.data_dir / "owner.json"
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"url": self.url, "token": self.token, "pid": os.getpid()}, f)
        os.replace(tmp, path)
        return self

    def stop(self) -> None:
        try:
            (self.data_dir / "owner.json").unlink(missing_ok=True)
        finally:
            self._httpd.shutdown()
            self._httpd.server_close()


def _make_handler(store: Warehouse, token: str):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # quiet; errors are logged below
            pass

        def _reply(self, code: int, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):  # noqa: N802 - http.server naming
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            if not secrets.compare_digest(self.headers.get("X-Flywheel-Token", ""), token):
                self._reply(403, b"missing or wrong X-Flywheel-Token (see owner.json)")
                return
            url = urlparse(self.path)
            qs = {k: v[0] for k, v in parse_qs(url.query).items()}
            try:
                if url.path == "/query":
                    out = store.query(body.decode("utf-8"), qs.get("format", "JSONEachRow"))
                elif url.path == "/insert":
                    store.insert_raw(qs["table"], body, qs.get("format", "JSONEachRow"), qs.get("token"))
                    out = b""
                else:
                    self._reply(404, b"use POST /query or POST /insert")
                    return
            except WarehouseError as exc:
                self._reply(400, str(exc).encode())
                return
            except Exception as exc:  # never kill the serving thread
                log.exception("warehouse owner request failed")
                self._reply(500, f"{type(exc).__name__}: {exc}".encode())
                return
            self._reply(200, out)

    return Handler
