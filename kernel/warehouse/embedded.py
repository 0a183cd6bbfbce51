"""chdb, the ClickHouse engine in this process, owning a data directory."""

from __future__ import annotations

import fcntl
import threading
from pathlib import Path

from kernel.warehouse import INSERT_SETTINGS, Warehouse, WarehouseError, clickhouse_message, sql_str


class StoreBusy(RuntimeError):
    """Another process owns the embedded store."""


class EmbeddedWarehouse(Warehouse):
    def __init__(self, path: Path, lock_dir: Path) -> None:
        lock_dir.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(lock_dir / "owner.lock", "a+")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise StoreBusy(str(lock_dir)) from None
        from chdb import session

        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._session = session.Session(str(self.path))
        self._mutex = threading.Lock()  # one statement at a time through the session
        self._closed = False

    def query(self, sql: str, fmt: str = "JSONEachRow") -> bytes:
        with self._mutex:
            if self._closed:
                raise WarehouseError("the embedded warehouse is closed")
            try:
                result = self._session.query(sql, fmt)
            except Exception as exc:  # chdb raises its own ChdbError / RuntimeError
                raise WarehouseError(clickhouse_message(exc)) from None
        return result.bytes() if result is not None else b""

    def insert_raw(self, table: str, data: bytes, fmt: str = "JSONEachRow",
                   dedup_token: str | None = None) -> None:
        settings = dict(INSERT_SETTINGS)
        if dedup_token:
            settings["insert_deduplication_token"] = dedup_token
        clause = ", ".join(f"{k}={sql_str(v)}" for k, v in settings.items())
        self.query(f"INSERT INTO {table} SETTINGS {clause} FORMAT {fmt}\n" + data.decode("utf-8"), "TSV")

    def close(self) -> None:
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            try:
                self._session.close()
            finally:
                try:
                    fcntl.flock(self._lock_file, fcntl.LOCK_UN)
                finally:
                    self._lock_file.close()
