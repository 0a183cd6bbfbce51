"""A ClickHouse server through clickhouse-connect: the production backend."""

from __future__ import annotations

from urllib.parse import urlparse

from kernel.warehouse import INSERT_SETTINGS, Warehouse, WarehouseError


class ServerWarehouse(Warehouse):
    def __init__(self, ch) -> None:
        import clickhouse_connect
        from clickhouse_connect.driver.exceptions import ClickHouseError

        self._errors = ClickHouseError
        url = urlparse(ch.url)
        self._client = clickhouse_connect.get_client(
            host=url.hostname or "localhost",
            port=url.port or (8443 if url.scheme == "https" else 8123),
            secure=url.scheme == "https",
            username=url.username or ch.username,
            password=ch.password.get() if ch.password else "",
            database=(url.path.strip("/") or ch.database),
        )
        self._where = f"{url.scheme}://{url.hostname}:{url.port}"

    def __repr__(self) -> str:
        return f"ServerWarehouse({self._where!r})"

    def query(self, sql: str, fmt: str = "JSONEachRow") -> bytes:
        try:
            return self._client.raw_query(sql, fmt=fmt)
        except self._errors as exc:
            raise WarehouseError(str(exc)) from None

    def query_checked(self, sql: str, fmt: str = "JSONEachRow", *, write: bool = False) -> bytes:
        """The guard parses with the server's own EXPLAIN AST; the server's user grants apply
        on top (give `flywheel sql` users a readonly profile in production)."""
        return super().query_checked(sql, fmt, write=write)

    def insert_raw(self, table: str, data: bytes, fmt: str = "JSONEachRow",
                   dedup_token: str | None = None) -> None:
        settings = dict(INSERT_SETTINGS)
        if dedup_token:
            settings["insert_deduplication_token"] = dedup_token
        try:
            self._client.raw_insert(table, insert_block=data, fmt=fmt, settings=settings)
        except self._errors as exc:
            raise WarehouseError(str(exc)) from None

    def close(self) -> None:
        self._client.close()
