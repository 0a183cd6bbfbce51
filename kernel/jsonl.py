"""JSON Lines input: one JSON object a line, blank lines skipped, every error naming ``file:line``."""

from __future__ import annotations

from typing import Iterable, Iterator

import orjson


class JsonlError(ValueError):
    """A line of a JSON Lines file is not a JSON object; the message starts with ``file:line``."""


def read_jsonl(lines: Iterable[bytes | str], source: str = "<input>", *, shape: str = "a JSON object",
               error: type[ValueError] = JsonlError) -> Iterator[tuple[int, dict]]:
    """(line number from 1, object) for each non-blank line of ``lines`` (``source`` names the file
    in errors). A line that is not UTF-8, not JSON or not an object raises ``error``
    ("``source:n``: ..."), saying that each line must be ``shape``; callers raise their own error
    type for what the object holds, naming the same ``source:n``."""
    for n, line in enumerate(lines, 1):
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise error(f"{source}:{n}: not UTF-8 text ({exc}); save the file as UTF-8") from None
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise error(f"{source}:{n}: not JSON ({exc}); each line must be {shape}") from None
        if not isinstance(obj, dict):
            raise error(f"{source}:{n}: each line must be {shape}")
        yield n, obj
