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
    for base in range(0, 19_000, 10):  # 1,900 batch files (a longer partition is windowed, below)
        (records / f"{base:0>20}.batch").write_bytes(b"x")
    keys, pages = list_all(url, f"{PART}/records/")
    assert keys == [f"{PART}/records/{b:0>20}.batch" for b in range(0, 19_000, 10)]
    assert pages == [1000, 900]
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
    put(url, f"{PART}/records/{15:0>20}.batch", b"new")             # written into a listed directory
    assert list_all(url, f"{PART}/records/")[0] == [f"{PART}/records/{b:0>20}.batch" for b in (9, 12, 15)]
    assert "<Size>1</Size>" in urllib.request.urlopen(f"{url}?list-type=2&prefix={PART}/w").read().decode()
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


def test_the_read_window_starts_at_the_head_and_reaches_past_the_furthest_reader():
    bases = list(range(0, 50_000, 10))                              # 5,000 batches
    assert broker_disk.window_end(bases, [], window=1000) == 1000     # no reader known: the head
    assert broker_disk.window_end(bases, [25], window=1000) == 1002   # the batch holding 25 is #2
    assert broker_disk.window_end(bases, [25, 30_005], window=1000) == 4000
    assert broker_disk.window_end(bases, [10**9], window=1000) == 5000  # never past the end
    assert broker_disk.window_end(bases, [-1], window=1000) == 1000


def test_a_fetch_listing_of_a_long_partition_ends_at_the_window_and_moves_with_readers(server):
    root, url = server
    records = root / broker_disk.BUCKET / PART / "records"
    n = broker_disk.WINDOW_FROM + 3000
    for i in range(n):
        (records / f"{i * 10:0>20}.batch").write_bytes(b"x")
    keys, _ = list_all(url, f"{PART}/records/")
    assert len(keys) == broker_disk.WINDOW and keys[0].endswith(f"{0:0>20}.batch")  # from the head
    # a consumer group committed at offset 20,005 (batch #2000): the window reaches 1,000 past it
    offsets = root / broker_disk.BUCKET / "clusters/c/groups/consumers/g/offsets/t/partitions"
    offsets.mkdir(parents=True)
    (offsets / "0000000000.json").write_text('{"offset":20005,"leader_epoch":null,"timestamp":null,"metadata":""}')
    keys, _ = list_all(url, f"{PART}/records/")
    assert len(keys) == 2000 + broker_disk.WINDOW
    assert keys == [f"{PART}/records/{i * 10:0>20}.batch" for i in range(len(keys))]  # no hole
    # a reader that read batch #4000 lately moves it further
    urllib.request.urlopen(f"{url}/{PART}/records/{40_000:0>20}.batch").read()
    assert len(list_all(url, f"{PART}/records/")[0]) == n
    # ListOffsets' listing (no trailing slash) always shows everything
    assert len(list_all(url, f"{PART}/records")[0]) == n
