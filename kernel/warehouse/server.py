"""A ClickHouse server through clickhouse-connect: the production backend."""

from __future__ import annotations

from urllib.parse import urlparse

from kernel.warehouse import (INSERT_SETTINGS, Warehouse, WarehouseError, WarehouseUnreachable,
                              clickhouse_message, unreachable_reason)


class ServerWarehouse(Warehouse):
    def __init__(self, ch) -> None:
        import logging

        import clickhouse_connect

        # its logger prints "Unexpected Http Driver Exception" before the exception we turn into
        # one message; the exception says it all
        logging.getLogger("clickhouse_connect").setLevel(logging.CRITICAL)
        from clickhouse_connect.driver.exceptions import ClickHouseError

        self._errors = ClickHouseError
        url = urlparse(ch.url)
        self._where = f"{url.scheme}://{url.hostname}:{url.port}"
        try:
            self._client = self._connect(clickhouse_connect, url, ch)
        except ClickHouseError as exc:
            raise self._failure(exc) from None

    def _failure(self, exc: BaseException) -> WarehouseError:
        """A refused statement keeps ClickHouse's message (once); a dead connection says so."""
        from clickhouse_connect.driver.exceptions import OperationalError

        if isinstance(exc, OperationalError) and "Code: " not in str(exc):
            return WarehouseUnreachable(
                f"cannot reach the ClickHouse server at {self._where} ({unreachable_reason(exc)}): is it running, "
                "and is FLYWHEEL_CLICKHOUSE_URL right? (unset it to use the embedded store)")
        return WarehouseError(clickhouse_message(exc))

    @staticmethod
    def _connect(clickhouse_connect, url, ch):
        return clickhouse_connect.get_client(
            host=url.hostname or "localhost",
            port=url.port or (8443 if url.scheme == "https" else 8123),
            secure=url.scheme == "https",
            username=url.username or ch.username,
            password=ch.password.get() if ch.password else "",
            database=(url.path.strip("/") or ch.database),
        )

    def __repr__(self) -> str:
        return f"ServerWarehouse({self._where!r})"

    def query(self, sql: str, fmt: str = "JSONEachRow") -> bytes:
        try:
            return self._client.raw_query(sql, fmt=fmt)
        except self._errors as exc:
            raise self._failure(exc) from None

    # query_checked (inherited): the guard parses with the server's own EXPLAIN AST; the
    # server's user grants apply on top (give `flywheel sql` users a readonly profile in production).

    def insert_raw(self, table: str, data: bytes, fmt: str = "JSONEachRow",
                   dedup_token: str | None = None) -> None:
        settings = dict(INSERT_SETTINGS)
        if dedup_token:
            settings["insert_deduplication_token"] = dedup_token
        try:
            self._client.raw_insert(table, insert_block=data, fmt=fmt, settings=settings)
        except self._errors as exc:
            raise self._failure(exc) from None

    def close(self) -> None:
        self._client.close()
