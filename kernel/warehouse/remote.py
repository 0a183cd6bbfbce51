"""Reach an embedded store that another process owns, over its loopback endpoint."""

from __future__ import annotations

import json
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
        return json.loads(path.read_text())
    except (OSError, ValueError):
        raise OwnerUnreachable(
            f"the store under {data_dir} is locked by another process but {path} is missing; "
            "that process is starting or stopping: retry in a few seconds") from None


class RemoteWarehouse(Warehouse):
    def __init__(self, owner: dict, timeout: float = 300.0) -> None:
        self.url = owner["url"]
        self._token = owner["token"]
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"RemoteWarehouse({self.url!r})"

    def _post(self, path: str, params: dict, body: bytes) -> bytes:
        req = urllib.request.Request(f"{self.url}{path}?{urlencode(params)}", data=body, method="POST",
                                     headers={"X-Flywheel-Token": self._token})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return resp.read()
        except urllib.error.HTTPError as exc:
            raise WarehouseError(clickhouse_message(exc.read().decode("utf-8", "replace"))) from None
        except urllib.error.URLError as exc:
            raise OwnerUnreachable(f"the process that owns the store ({self.url}) did not answer: "
                                   f"{exc.reason}") from None

    def query(self, sql: str, fmt: str = "JSONEachRow") -> bytes:
        return self._post("/query", {"format": fmt}, sql.encode("utf-8"))

    def insert_raw(self, table: str, data: bytes, fmt: str = "JSONEachRow",
                   dedup_token: str | None = None) -> None:
        params = {"table": table, "format": fmt}
        if dedup_token:
            params["token"] = dedup_token
        self._post("/insert", params, data)
