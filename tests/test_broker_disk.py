"""The S3 server under the embedded broker's disk storage: listings are paged, ordered, follow
the files (a trim's unlinks, a rewritten object) and forget what is gone."""

from __future__ import annotations

import base64
import http.server
import re
import threading
import urllib.request
from pathlib import Path

import localbucket
import pytest

from kernel import broker_disk

PART = "clusters/c/topics/t/partitions/0000000000"


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "broker"
    (root / broker_disk.BUCKET / PART / "records").mkdir(parents=True)
    broker_disk.Handler.data_root = root.resolve()
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), broker_disk.Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{srv.server_address[1]}/{broker_disk.BUCKET}"
    srv.shutdown()
    srv.server_close()


def put(url: str, key: str, body: bytes) -> None:
    urllib.request.urlopen(urllib.request.Request(f"{url}/{key}", data=body, method="PUT")).read()


def list_all(url: str, prefix: str) -> tuple[list[str], list[int]]:
    """Every key under ``prefix``, following continuation tokens as object_store does; and the
    size of each page."""
    keys, pages, token = [], [], None
    while True:
        q = f"{url}?list-type=2&prefix={prefix}" + (f"&continuation-token={token}" if token else "")
        body = urllib.request.urlopen(q).read().decode()
        page = re.findall(r"<Key>([^<]*)</Key>", body)
        keys += page
        pages.append(len(page))
        m = re.search(r"<NextContinuationToken>([^<]*)<", body)
        if not m:
            assert "<IsTruncated>false</IsTruncated>" in body
            return keys, pages
        token = m.group(1)


def test_a_long_partition_is_listed_in_pages_in_order(server):
    root, url = server
    records = root / broker_disk.BUCKET / PART / "records"
    for base in range(0, 25_000, 10):  # 2,500 batch files
        (records / f"{base:0>20}.batch").write_bytes(b"x")
    keys, pages = list_all(url, f"{PART}/records/")
    assert keys == [f"{PART}/records/{b:0>20}.batch" for b in range(0, 25_000, 10)]
    assert pages == [1000, 1000, 500]
    # start-after, as S3
    body = urllib.request.urlopen(f"{url}?list-type=2&prefix={PART}/records/&start-after={keys[-2]}").read().decode()
    assert re.findall(r"<Key>([^<]*)</Key>", body) == [keys[-1]]


def test_listing_a_partition_merges_its_directories_in_key_order(server):
    root, url = server
    put(url, f"{PART}/watermark.json", b'{"low":0,"high":3}')
    put(url, f"{PART}/records/{0:0>20}.batch", b"a")
    put(url, f"{PART}/records/{3:0>20}.batch", b"b")
    keys, _ = list_all(url, f"{PART}/r")                       # Tansu's ListOffsets prefix
    assert keys == [f"{PART}/records/{0:0>20}.batch", f"{PART}/records/{3:0>20}.batch"]
    keys, _ = list_all(url, PART)
    assert keys == [f"{PART}/records/{0:0>20}.batch", f"{PART}/records/{3:0>20}.batch", f"{PART}/watermark.json"]


def test_listings_follow_the_trim_and_rewrites_and_forget_what_is_gone(server):
    root, url = server
    for base in (0, 5, 9, 12):
        put(url, f"{PART}/records/{base:0>20}.batch", b"r" * (base + 1))
    put(url, f"{PART}/watermark.json", b"1")
    assert len(list_all(url, f"{PART}/records/")[0]) == 4        # cached now
    records = root / broker_disk.BUCKET / PART / "records"
    assert any(str(records) in p for p in localbucket._etag_cache)
    gone = broker_disk.trim_disk(root, {("t", 0): 10})              # 0 and 5 lie wholly below 10
    assert gone == {"t/0": 2}
    assert list_all(url, f"{PART}/records/")[0] == [f"{PART}/records/{b:0>20}.batch" for b in (9, 12)]
    assert str((records / f"{0:0>20}.batch").resolve()) not in localbucket._etag_cache
    assert str((records / f"{9:0>20}.batch").resolve()) in localbucket._etag_cache
    put(url, f"{PART}/watermark.json", b"22")                       # a rewritten object: new size
    body = urllib.request.urlopen(f"{url}?list-type=2&prefix={PART}/w").read().decode()
    assert "<Size>2</Size>" in body
    # milliseconds in LastModified (Tansu picks the newest object for ListOffsets(latest))
    assert re.search(r"<LastModified>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z</LastModified>", body)


def test_a_bad_continuation_token_is_a_400_not_a_crash(server):
    _, url = server
    bad = base64.urlsafe_b64encode(b"\xff\xfe").decode()
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{url}?list-type=2&prefix={PART}/&continuation-token={bad}")
    assert err.value.code == 400


def test_disk_usage_counts_files(tmp_path: Path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x").write_bytes(b"12345")
    assert broker_disk.disk_usage(tmp_path) == (1, 5)
