"""The warehouse: one interface, three ways to reach ClickHouse, the same SQL everywhere.

* ``EmbeddedWarehouse``: chdb in this process, data under ``<data_dir>/chdb``. Only one process
  may own that directory; the owner holds ``owner.lock`` and serves the store to others.
* ``RemoteWarehouse``: another process owns the embedded store; talk to it over loopback HTTP.
* ``ServerWarehouse``: a ClickHouse server through clickhouse-connect (production).

``open_warehouse(settings)`` picks the right one.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from typing import Any, Iterable

import orjson

# Settings of every INSERT, whatever the backend.
INSERT_SETTINGS = {"date_time_input_format": "best_effort",
                   # a retried block dropped by its table still reaches its materialised views
                   "deduplicate_blocks_in_dependent_materialized_views": "1"}


class WarehouseError(RuntimeError):
    """ClickHouse refused a statement; the message is ClickHouse's own."""


class WarehouseUnreachable(WarehouseError):
    """The ClickHouse server did not answer at all (not a refused statement)."""


_VERSION = re.compile(r"\s*\(version [^)]*\)\.?")
_REPEATED_NAME = re.compile(r"(\([A-Z_]+\))(?:[.\s]*\1)+")
_ERRNO = re.compile(r"\[Errno -?\d+\] [^\"')\]]+")


def clickhouse_message(text: object) -> str:
    """ClickHouse's own message, once: ``Code: 60. DB::Exception: Unknown table ... (UNKNOWN_TABLE)``.

    The HTTP interface wraps the exception in the driver's preamble and repeats it (the server
    nests the same exception, and appends the version and a stack trace): keep the first
    ``Code: N. DB::Exception: ...`` line with the inner repeats, version and trace removed."""
    text = str(text).strip()
    i = text.find("Code: ")
    if i < 0:
        return text
    line = text[i:].splitlines()[0]
    line = _VERSION.sub("", line).strip()
    head, sep, rest = line.partition("DB::Exception: ")
    while sep and rest.startswith("Code: "):  # a nested copy of the same exception
        head, sep, rest = rest.partition("DB::Exception: ")
    return _REPEATED_NAME.sub(r"\1", f"{head}{sep}{rest}".strip())


def unreachable_reason(exc: BaseException) -> str:
    """The short reason a connection failed, e.g. ``[Errno 111] Connection refused``."""
    m = _ERRNO.search(str(exc))
    return m.group(0).strip() if m else type(exc).__name__


class Warehouse(ABC):
    """The few operations flywheel needs from ClickHouse."""

    @abstractmethod
    def query(self, sql: str, fmt: str = "JSONEachRow") -> bytes:
        """Run one statement and return its output in the ClickHouse format ``fmt``."""

    @abstractmethod
    def insert_raw(self, table: str, data: bytes, fmt: str = "JSONEachRow",
                   dedup_token: str | None = None) -> None:
        """Insert pre-encoded rows. With ``dedup_token``, a retried block is dropped by tables
        that keep a deduplication window."""

    def close(self) -> None:  # pragma: no cover - trivial
        pass

    def query_checked(self, sql: str, fmt: str = "JSONEachRow", *, write: bool = False) -> bytes:
        """Run SQL typed by a person or sent by another process: one statement, nothing that
        reaches files or URLs, and unless ``write`` only statements that read (QueryRefused
        otherwise; see kernel.warehouse.guard)."""
        from kernel.warehouse.guard import check_sql

        stmt = check_sql(sql, self.explain_ast, readonly=not write)
        return self.query(stmt, fmt)

    def explain_ast(self, stmt: str) -> str:
        """ClickHouse's parse tree of one statement (EXPLAIN AST), one node a line."""
        return self.query("EXPLAIN AST " + stmt, "TSVRaw").decode("utf-8", "replace")

    # Conveniences built on the two primitives.
    def command(self, sql: str) -> None:
        self.query(sql, "TSV")

    def rows(self, sql: str) -> list[dict[str, Any]]:
        out = self.query(sql, "JSONEachRow")
        return [orjson.loads(line) for line in out.splitlines() if line]

    def scalar(self, sql: str) -> Any:
        rows = self.rows(sql)
        if not rows:
            return None
        return next(iter(rows[0].values()))

    def insert(self, table: str, rows: Iterable[dict[str, Any]], dedup_token: str | None = None) -> int:
        """Insert dict rows. They are encoded in one orjson call as a JSON array (JSONEachRow
        accepts one), about 25x cheaper than a dumps per row; datetimes go as RFC 3339 and are
        read with date_time_input_format='best_effort' (INSERT_SETTINGS)."""
        rows = rows if isinstance(rows, list) else list(rows)
        if not rows:
            return 0
        self.insert_raw(table, orjson.dumps(rows, default=_default), "JSONEachRow", dedup_token)
        return len(rows)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def sql_str(value: str) -> str:
    """A ClickHouse string literal, quotes and backslashes escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _default(value: Any) -> Any:
    # numpy scalars and the like
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot encode {type(value).__name__} for ClickHouse")


def open_warehouse(settings, *, own: bool = False) -> Warehouse:
    """Open the warehouse named by settings.

    With a ClickHouse URL: a server client. Otherwise the embedded store: own it if nobody
    does (or fail when ``own`` is set and another process owns it), else reach the owner.
    """
    if settings.clickhouse.url:
        from kernel.warehouse.server import ServerWarehouse

        return ServerWarehouse(settings.clickhouse)
    from kernel.warehouse.embedded import EmbeddedWarehouse, StoreBusy
    from kernel.warehouse.remote import RemoteWarehouse, read_owner

    try:
        return EmbeddedWarehouse(settings.chdb_path, lock_dir=settings.data_dir)
    except StoreBusy:
        if own:
            raise
        return RemoteWarehouse(read_owner(settings.data_dir))
