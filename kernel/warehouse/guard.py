"""What SQL the store accepts from outside the owning process (``flywheel sql``, the owner's
endpoint): one statement, nothing that reaches files, URLs or other servers, nothing that
changes the shared session, and with ``readonly`` only statements that read.

The check uses ClickHouse's own parser (``EXPLAIN AST``), so a table function hidden in a
sub-query, a CTE or an ``INSERT INTO FUNCTION`` is seen the way the engine would see it. It
exists because a query-level ``SETTINGS readonly=1`` can be undone by a later
``readonly=0`` in the same clause (tried on chdb 4.4), and because chdb runs every statement
of a ``;``-separated text, so ``SELECT 1; DROP TABLE examples`` would drop the table.
"""

from __future__ import annotations

import re
from typing import Callable

from kernel.warehouse import WarehouseError


class QueryRefused(WarehouseError):
    """A statement the store does not run for this caller; the message says why and the fix."""


# Table functions, table engines, dictionary sources and scalar functions that read or write
# outside the store (files, URLs, object stores, other databases, programs).
EXTERNAL = frozenset(name.lower() for name in (
    "file", "fileCluster", "url", "urlCluster", "s3", "s3Cluster", "gcs", "cosn", "oss", "hdfs",
    "hdfsCluster", "azureBlobStorage", "azureBlobStorageCluster", "remote", "remoteSecure",
    "cluster", "clusterAllReplicas", "mysql", "postgresql", "sqlite", "mongodb", "redis", "jdbc",
    "odbc", "executable", "executablePool", "input", "deltaLake", "deltaLakeCluster", "hudi",
    "hudiCluster", "iceberg", "icebergS3", "icebergAzure", "icebergHDFS", "icebergLocal",
    "icebergCluster", "icebergS3Cluster", "paimon", "hive", "kafka", "rabbitmq", "nats", "http",
    "clickhouse", "mysql_native", "arrowflight", "ytsaurus", "prometheusQuery", "dictionary",
    "filesystem", "timeSeriesData",
))

# Statements that read: allowed with readonly.
READ_ROOTS = ("SelectWithUnionQuery", "SelectIntersectExceptQuery", "SelectQuery", "Explain",
              "Show", "DescribeQuery", "ExistsTableQuery", "ExistsDatabaseQuery", "ExistsViewQuery",
              "ExistsDictionaryQuery", "CheckQuery")
# Statements never run from outside: they change the shared session or reach the file system.
NEVER_ROOTS = ("SYSTEM", "Set", "UseQuery", "BackupQuery", "RestoreQuery", "KillQueryQuery",
               "AttachQuery", "Detach", "CreateFunction", "CreateUserQuery", "GrantQuery")

_NODE = re.compile(r"^(\s*)(Function|FunctionWithKeyValueArguments)\s+(\S+)", re.M)
_FILE_CLAUSE = re.compile(r"\bINTO\s+OUTFILE\b|\bFROM\s+INFILE\b", re.I)


def split_statements(sql: str) -> list[str]:
    """The statements of ``sql`` split at ``;`` outside quotes and comments (empty ones dropped)."""
    out: list[str] = []
    start = i = 0
    n = len(sql)
    while i < n:
        c = sql[i]
        if c in "'\"`":
            i += 1
            while i < n and sql[i] != c:
                i += 2 if sql[i] == "\\" else 1
        elif sql.startswith("--", i) or c == "#":
            j = sql.find("\n", i)
            i = n if j < 0 else j
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            i = n if j < 0 else j + 1
        elif c == ";":
            out.append(sql[start:i])
            start = i + 1
        i += 1
    out.append(sql[start:])
    return [s for s in (part.strip() for part in out) if s and not _only_comments(s)]


def _only_comments(text: str) -> bool:
    stripped = re.sub(r"--[^\n]*|#[^\n]*|/\*.*?\*/", "", text, flags=re.S)
    return not stripped.strip()


def check_sql(sql: str, explain: Callable[[str], str], *, readonly: bool) -> str:
    """The one statement of ``sql`` if the store may run it for an outside caller, else
    QueryRefused. ``explain(stmt)`` returns ClickHouse's ``EXPLAIN AST`` text of one statement
    (a syntax error raises WarehouseError from there)."""
    stmts = split_statements(sql)
    if not stmts:
        raise QueryRefused("empty query: give one SQL statement")
    if len(stmts) > 1:
        raise QueryRefused(f"one statement at a time, got {len(stmts)} separated by ';'")
    stmt = stmts[0]
    if _FILE_CLAUSE.search(stmt):
        raise QueryRefused("INTO OUTFILE / FROM INFILE are refused: the store does not read or write "
                           "files for callers; use --format and redirect the output instead")
    ast = explain(stmt)
    first = next((ln for ln in ast.splitlines() if ln.strip()), "")
    root = first.split()[0] if first.split() else ""
    for _indent, _kind, name in _NODE.findall(ast):
        if name.lower() in EXTERNAL:
            raise QueryRefused(f"{name}() reaches outside the store (files, URLs or other servers) "
                               "and is refused here; load data with `flywheel produce` or "
                               "`flywheel gold import`")
    if any(root.startswith(r) for r in NEVER_ROOTS) or first.startswith("SYSTEM"):
        raise QueryRefused(f"{root or first!r} statements are refused: they change the store's "
                           "shared session or reach its files")
    if readonly and not any(root.startswith(r) for r in READ_ROOTS):
        raise QueryRefused(f"read-only: {root or 'this statement'} would change the store; "
                           "`flywheel sql --write` runs statements that write")
    return stmt
