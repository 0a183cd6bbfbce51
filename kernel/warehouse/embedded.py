"""chdb, the ClickHouse engine in this process, owning a data directory."""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

from kernel.warehouse import INSERT_SETTINGS, Warehouse, WarehouseError, clickhouse_message, sql_str


class StoreBusy(RuntimeError):
    """Another process owns the embedded store."""


def restrict_tree(root: Path) -> int:
    """Make ``root`` private to this user: directories 0700, files 0600 (a store made before
    this rule had 0755/0644). Returns how many entries changed."""
    changed = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name, mode in [(dirpath, 0o700)] + [(os.path.join(dirpath, f), 0o600) for f in filenames]:
            try:
                st = os.lstat(name)
                if not os.path.islink(name) and st.st_mode & 0o777 != mode:
                    os.chmod(name, mode)
                    changed += 1
            except FileNotFoundError:  # a merge removed it meanwhile
                pass
    return changed


def private_umask() -> None:
    """From now on this process creates files only its user can read (umask += 077): chdb
    writes parts and logs under the data directory long after it is opened."""
    current = os.umask(0o077)
    os.umask(current | 0o077)


class EmbeddedWarehouse(Warehouse):
    def __init__(self, path: Path, lock_dir: Path) -> None:
        private_umask()
        lock_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(lock_dir, 0o700)
        self._lock_file = open(lock_dir / "owner.lock", "a+")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise StoreBusy(str(lock_dir)) from None
        from chdb import session

        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        restrict_tree(lock_dir)
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
