"""The store owner's endpoint under abuse, and the store's files: a real chdb store served by
the real OwnerServer on loopback, hit with raw sockets the way a hostile local user would."""

from __future__ import annotations

import json
import os
import socket
import stat
import threading
import time

import pytest
from click.testing import CliRunner

from kernel.settings import load_settings
from kernel.warehouse import WarehouseError, open_warehouse
from kernel.warehouse.guard import QueryRefused, split_statements
from kernel.warehouse.migrate import apply_ddl
from kernel.warehouse.owner import OwnerServer
from kernel.warehouse.remote import OwnerUnreachable, RemoteWarehouse, read_owner


@pytest.fixture
def owned(tmp_path):
    """(store, server): a store owned by this test, served with a small pool and short timeouts."""
    s = load_settings({}, data_dir=tmp_path / "data")
    store = open_warehouse(s, own=True)
    apply_ddl(store)
    server = OwnerServer(store, s.data_dir, max_workers=4, max_queue=8, max_body=1 << 20, read_timeout=0.5,
                         request_deadline=1.5).start()
    yield store, server
    server.stop()
    store.close()


def raw(server, data: bytes, *, read: bool = True, timeout: float = 5.0) -> tuple[int, bytes]:
    """Send raw bytes to the endpoint; (status, body) of the answer."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        try:
            s.sendall(data)
        except OSError:
            pass
        if not read:
            return 0, b""
        buf = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def post(server, path: str, body: bytes, token: str | None, extra: str = "") -> tuple[int, bytes]:
    hdr = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{extra}"
    if token is not None:
        hdr += f"X-Flywheel-Token: {token}\r\n"
    return raw(server, hdr.encode() + b"\r\n" + body)


def rss_mib() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_unauthenticated_huge_body_is_refused_before_it_is_read(owned):
    store, server = owned
    before = rss_mib()
    host, port = server.url.removeprefix("http://").split(":")
    t0 = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"POST /query HTTP/1.1\r\nHost: x\r\nContent-Length: 268435456\r\n"
                  b"X-Flywheel-Token: wrong\r\n\r\n")
        reply = s.recv(4096)
        while b"Token" not in reply and len(reply) < 4096:
            more = s.recv(4096)
            if not more:
                break
            reply += more
        sent = 0
        try:  # keep pushing the body: the server must not be buffering it
            for _ in range(64):
                s.sendall(b"x" * (1 << 20))
                sent += 1
        except OSError:
            pass
    assert reply.startswith(b"HTTP/1.1 401"), reply[:80]
    assert b"X-Flywheel-Token" in reply
    assert time.monotonic() - t0 < 5
    assert sent < 64                                   # the server hung up instead of reading it
    assert rss_mib() - before < 32


def test_status_codes_for_bad_requests(owned):
    store, server = owned
    tok = server.token
    assert post(server, "/query", b"SELECT 1", None)[0] == 401
    assert post(server, "/query", b"SELECT 1", "x" * 5000)[0] == 401
    assert post(server, "/nope", b"", tok)[0] == 404
    assert raw(server, b"GET /query HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 405
    assert raw(server, b"POST /query NOTHTTP/9\r\n\r\n")[0] == 400
    assert raw(server, b"POST /query HTTP/1.1\r\nContent-Length: abc\r\nX-Flywheel-Token: "
               + tok.encode() + b"\r\n\r\n")[0] == 400
    assert raw(server, b"POST /query HTTP/1.1\r\nContent-Length: -5\r\nX-Flywheel-Token: "
               + tok.encode() + b"\r\n\r\n")[0] == 400
    assert raw(server, b"POST /query HTTP/1.1\r\nX-Flywheel-Token: " + tok.encode() + b"\r\n\r\n")[0] == 411
    assert raw(server, b"POST /query HTTP/1.1\r\nTransfer-Encoding: chunked\r\nX-Flywheel-Token: "
               + tok.encode() + b"\r\n\r\n1\r\nx\r\n0\r\n\r\n")[0] == 411
    headers = "".join(f"X-H{i}: v\r\n" for i in range(200))
    assert post(server, "/query", b"SELECT 1", tok, headers)[0] in (400, 431)
    code, body = post(server, "/query", b"x" * ((1 << 20) + 1), tok)
    assert code == 413 and b"limit" in body
    assert post(server, "/query", b"\xff\xfe SELECT", tok)[0] == 400
    assert post(server, "/query?format=TSV;DROP", b"SELECT 1", tok)[0] == 400
    assert post(server, "/insert?table=examples%20SELECT", b"{}", tok)[0] == 400
    assert post(server, "/insert", b"{}", tok)[0] == 400
    assert post(server, "/insert?table=examples", b"\xff\xff not json", tok)[0] == 400
    assert post(server, "/insert?table=examples", b"{\"id\": [1, 2", tok)[0] == 400
    assert post(server, "/query", b"SELEC nonsense", tok)[0] == 400
    code, body = post(server, "/query?format=TSV", b"SELECT 41 + 1", tok)
    assert (code, body) == (200, b"42\n")                # and it still serves


def test_stalled_connections_do_not_grow_threads_and_are_cut(owned):
    store, server = owned
    threads_before = threading.active_count()
    host, port = server.url.removeprefix("http://").split(":")
    stalled = []
    for i in range(60):
        s = socket.create_connection((host, int(port)), timeout=5)
        s.sendall(b"POST /query HTTP/1.1\r\n")            # and then nothing
        stalled.append(s)
    time.sleep(0.3)
    assert threading.active_count() - threads_before <= 4  # the pool, never a thread per socket
    assert server.rejected >= 45                            # beyond pool and queue: 503 at once
    assert server.busy <= 12
    remote = RemoteWarehouse(read_owner(server.data_dir), busy_wait=10)
    t0 = time.monotonic()
    assert remote.query("SELECT 1 AS x", "TSV") == b"1\n"   # served once the stalled ones are cut
    assert time.monotonic() - t0 < 5
    for s in stalled:
        s.close()
    # a slow sender (a byte every 0.3 s, each read within read_timeout) is cut at the deadline
    with socket.create_connection((host, int(port)), timeout=5) as s:
        t0 = time.monotonic()
        cut = False
        try:
            for ch in b"POST /query HTTP/1.1\r\nX-A: " + b"a" * 40:
                s.sendall(bytes([ch]))
                time.sleep(0.3)
                if time.monotonic() - t0 > 6:
                    break
        except OSError:
            cut = True
        assert cut and time.monotonic() - t0 < 6


def test_guard_refuses_files_urls_many_statements_and_writes_when_read_only(owned):
    store, server = owned
    remote = RemoteWarehouse(read_owner(server.data_dir))
    for sql in ("DROP TABLE examples", "INSERT INTO examples (id) VALUES ('x')", "ALTER TABLE examples DELETE WHERE 1",
                "SET readonly = 0", "SELECT 1 SETTINGS readonly = 1, readonly = 0; DROP TABLE examples"):
        with pytest.raises(QueryRefused):
            remote.query_checked(sql, "TSV")
    for sql in ("SELECT * FROM file('/etc/passwd', 'LineAsString')", "SELECT file('/etc/hostname')",
                "INSERT INTO FUNCTION file('/tmp/x.csv', 'CSV') SELECT 1",
                "SELECT * FROM examples WHERE id IN (SELECT * FROM url('http://127.0.0.1:1/', CSV, 'x String'))",
                "WITH t AS (SELECT * FROM s3('http://127.0.0.1:1/b/k')) SELECT * FROM t",
                "CREATE TABLE leak (x String) ENGINE = File(CSV)",
                "SELECT 1 INTO OUTFILE '/tmp/out.txt'", "SYSTEM DROP MARK CACHE",
                "SELECT 1; DROP TABLE examples"):
        with pytest.raises(QueryRefused):
            remote.query_checked(sql, "TSV", write=True)
        with pytest.raises(QueryRefused):   # the endpoint's /query checks what any client sends
            remote.query(sql, "TSV")
    assert store.scalar("EXISTS TABLE examples") == 1
    assert not os.path.exists("/tmp/x.csv") or os.path.getmtime("/tmp/x.csv") < time.time() - 60
    assert remote.query_checked("SELECT count() FROM examples", "TSV") == b"0\n"
    assert remote.query_checked("SHOW TABLES", "TSV")
    remote.query_checked("CREATE TABLE scratch (x UInt8) ENGINE = Memory", "TSV", write=True)
    assert store.scalar("EXISTS TABLE scratch") == 1
    assert split_statements("SELECT ';' -- ;\n; ") == ["SELECT ';' -- ;"]


def test_files_are_private_and_owner_json_lifecycle(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    os.chmod(data, 0o755)
    stale = {"url": "http://127.0.0.1:1", "token": "old-token", "pid": 2 ** 22 + 12345}
    (data / "owner.json").write_text(json.dumps(stale))
    with pytest.raises(OwnerUnreachable, match="gone"):
        read_owner(data)                                      # a crashed owner's file is named stale
    s = load_settings({}, data_dir=data)
    store = open_warehouse(s, own=True)
    apply_ddl(store)
    store.insert("examples", [{"id": "e", "ts": "2026-01-01 00:00:00", "task": "t", "input": "i", "output": "o",
                               "slice": "", "confidence": 1, "teacher": "g", "meta": "{}", "input_hash": 1,
                               "source_partition": 0, "source_offset": 0, "curated_at": "2026-01-01 00:00:00"}])
    server = OwnerServer(store, data).start()
    try:
        info = read_owner(data)
        assert info["token"] != "old-token" and info["pid"] == os.getpid()
        modes = []
        for dirpath, dirnames, filenames in os.walk(data):
            modes.append((dirpath, stat.S_IMODE(os.stat(dirpath).st_mode), 0o700))
            modes += [(f, stat.S_IMODE(os.lstat(os.path.join(dirpath, f)).st_mode), 0o600) for f in filenames
                      if not os.path.islink(os.path.join(dirpath, f))]
        bad = [(p, oct(m)) for p, m, want in modes if m & 0o077]
        assert not bad, bad[:5]
        assert len(modes) > 10
    finally:
        server.stop()
        store.close()
    assert not (data / "owner.json").exists()                 # removed on a clean stop


def test_flywheel_sql_is_read_only_unless_write(tmp_path, tasks_dir):
    from flywheel.cli import main
    from tests.helpers.testing import make_store

    def run(*args):
        return CliRunner().invoke(main, ["--data-dir", str(tmp_path / "d"), "--tasks", str(tasks_dir), "sql", *args])

    make_store(tmp_path / "d")  # `sql` refuses a data dir that holds no store
    res = run("DROP TABLE examples")
    assert res.exit_code == 1 and "read-only" in res.output and "--write" in res.output
    res = run("SELECT count() FROM examples", "--format", "TSV")
    assert res.exit_code == 0 and res.output.strip() == "0"
    res = run("SELECT * FROM file('/etc/passwd', 'LineAsString')", "--write")
    assert res.exit_code == 1 and "reaches outside" in res.output
    res = run("CREATE TABLE IF NOT EXISTS scratch (x UInt8) ENGINE = MergeTree ORDER BY x", "--write")
    assert res.exit_code == 0, res.output
    res = run("EXISTS TABLE scratch", "--format", "TSV")
    assert res.output.strip() == "1"


def test_refusal_is_a_warehouse_error():
    assert issubclass(QueryRefused, WarehouseError)


def test_header_limit_holds_after_clickhouse_connect_raised_the_global_one(owned):
    import http.client

    import clickhouse_connect  # noqa: F401  (raises http.client._MAXHEADERS to 10,000 on import)

    store, server = owned
    assert http.client._MAXHEADERS > 200
    headers = "".join(f"X-H{i}: v\r\n" for i in range(200))
    assert post(server, "/query", b"SELECT 1", server.token, headers)[0] in (400, 431)
    assert post(server, "/query", b"SELECT 1", server.token)[0] == 200
