"""Which faults can heal: the one classification behind every retry decision (pure).

A write that fails is either retried as it is, because the fault is outside the data and can
go away (the store or the broker unreachable, the disk full, the store's pool busy), or split
until the rows the store refuses are isolated, because the fault is in the data (ClickHouse
could not parse or convert a value, a block spans too many partitions, a message is too large
for the broker). Anything unrecognised is treated as a fault that can heal: retrying a batch
costs time, dead-lettering valid rows on an unexplained error would lose them.
"""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass

# ClickHouse error codes that name a problem of the rows themselves (src/Common/ErrorCodes.cpp).
DATA_CODES = {
    6,    # CANNOT_PARSE_TEXT
    26,   # CANNOT_PARSE_QUOTED_STRING
    27,   # CANNOT_PARSE_INPUT_ASSERTION_FAILED
    38,   # CANNOT_PARSE_DATE
    41,   # CANNOT_PARSE_DATETIME
    53,   # TYPE_MISMATCH
    69,   # ARGUMENT_OUT_OF_BOUND
    70,   # CANNOT_CONVERT_TYPE
    72,   # CANNOT_PARSE_NUMBER
    117,  # INCORRECT_DATA
    131,  # TOO_LARGE_STRING_SIZE
    252,  # TOO_MANY_PARTS (too many partitions in one insert block)
    321,  # VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
    349,  # CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN
    #     (the store says which row; splitting finds it)
}
DISK_CODES = {243}  # NOT_ENOUGH_SPACE
_CODE = re.compile(r"Code:\s*(\d+)")
_DISK_TEXT = ("No space left on device", "NOT_ENOUGH_SPACE", "Cannot reserve")
_DATA_TEXT = ("Cannot parse", "CANNOT_PARSE", "Type mismatch", "TOO_MANY_PARTS", "Too many partitions",
              "INCORRECT_DATA", "out of range")


@dataclass(frozen=True)
class Fault:
    kind: str    # store, broker, disk_full, data, other
    heals: bool  # retry as it is (True) or split and isolate (False)


def clickhouse_code(text: str) -> int | None:
    m = _CODE.search(text)
    return int(m.group(1)) if m else None


def classify(exc: BaseException) -> Fault:
    """The kind of a failed store or broker operation, and whether waiting can fix it."""
    name = type(exc).__name__
    text = str(exc)
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return Fault("disk_full", True)
    if any(t in text for t in _DISK_TEXT) or clickhouse_code(text) in DISK_CODES:
        return Fault("disk_full", True)
    # aiokafka's errors: MessageSizeTooLargeError and the like are about the record itself
    if name in ("MessageSizeTooLargeError", "RecordTooLargeError", "InvalidRecordError", "CorruptRecordException"):
        return Fault("data", False)
    if name.startswith("Kafka") or "Kafka" in type(exc).__module__ or name in ("NodeNotReadyError",
                                                                                "RequestTimedOutError",
                                                                                "NotLeaderForPartitionError"):
        return Fault("broker", True)
    if name in ("OwnerUnreachable",) or isinstance(exc, (ConnectionError, TimeoutError)):
        return Fault("store", True)
    if name in ("WarehouseError", "QueryRefused", "ChdbError", "DatabaseError"):
        code = clickhouse_code(text)
        if code in DATA_CODES or (code is None and any(t in text for t in _DATA_TEXT)):
            return Fault("data", False)
        return Fault("store", True)
    return Fault(name or "other", True)
