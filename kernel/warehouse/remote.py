"""Reach an embedded store that another process owns, over its loopback endpoint."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

from kernel.warehouse import Warehouse, WarehouseError, clickhouse_message


class OwnerUnreachable(RuntimeError):
    pass


def read_owner(data_dir: Path) -> dict:
    path = Path(data_dir) / "owner.json"
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        raise OwnerUnreachable(
            f"the store under {data_dir} is locked by another process but {path} is missing; "
            "that process is starting or stopping: retry in a few seconds") from None
    pid = info.get("pid")
    if isinstance(pid, int) and not _alive(pid):
        raise OwnerUnreachable(f"{path} names process {pid}, which is gone (it crashed); the store's "
                               "next owner replaces the file: retry in a few seconds")
    return info


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RemoteWarehouse(Warehouse):
    """The owner's endpoint. A 503 (its worker pool is full) is retried with backoff for up to
    ``busy_wait`` seconds; a refused statement raises QueryRefused, any other 4xx WarehouseError."""

    def __init__(self, owner: dict, timeout: float = 300.0, busy_wait: float = 30.0) -> None:
        self.busy_wait = busy_wait
        self.url = owner["url"]
        self._token = owner["token"]
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"RemoteWarehouse({self.url!r})"

    def _post(self, path: str, params: dict, body: bytes) -> bytes:
        req = urllib.request.Request(f"{self.url}{path}?{urlencode(params)}", data=body, method="POST",
                                     headers={"X-Flywheel-Token": self._token})
        deadline = time.monotonic() + self.busy_wait
        pause = 0.05
        while True:
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    return resp.read()
            except urllib.error.HTTPError as exc:
                text = exc.read().decode("utf-8", "replace")
                if exc.code == 503 and time.monotonic() < deadline:
                    time.sleep(pause)
                    pause = min(pause * 2, 1.0)
                    continue
                if exc.code == 403:
                    from kernel.warehouse.guard import QueryRefused

                    raise QueryRefused(text) from None
                raise WarehouseError(clickhouse_message(text)) from None
            except urllib.error.URLError as exc:
                # a busy owner answers 503 and hangs up before reading the body: the client may
                # see that as a broken pipe; the request was not run, so it is safe to retry
                if isinstance(exc.reason, (BrokenPipeError, ConnectionResetError)) and time.monotonic() < deadline:
                    time.sleep(pause)
                    pause = min(pause * 2, 1.0)
                    continue
                raise OwnerUnreachable(f"the process that owns the store ({self.url}) did not answer: "
                                       f"{exc.reason}") from None
            except (ConnectionError, TimeoutError) as exc:
                raise OwnerUnreachable(f"the process that owns the store ({self.url}) did not answer: "
                                       f"{exc}") from None

    def query(self, sql: str, fmt: str = "JSONEachRow") -> bytes:
        return self._post("/query", {"format": fmt}, sql.encode("utf-8"))

    def query_checked(self, sql: str, fmt: str = "JSONEachRow", *, write: bool = False) -> bytes:
        params = {"format": fmt}
        if not write:
            params["readonly"] = "1"
        return self._post("/query", params, sql.encode("utf-8"))

    def insert_raw(self, table: str, data: bytes, fmt: str = "JSONEachRow",
                   dedup_token: str | None = None) -> None:
        params = {"table": table, "format": fmt}
        if dedup_token:
            params["token"] = dedup_token
        self._post("/insert", params, data)
