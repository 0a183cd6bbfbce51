"""JSON Lines input (kernel/jsonl.py) and its two readers: gold imports and review verdict imports."""

from __future__ import annotations

import pytest

from kernel.gold import GoldError, parse_gold_lines
from kernel.jsonl import JsonlError, read_jsonl
from kernel.tasks import parse_task
from streams.review.transfer import TransferError, parse_verdict_lines

TASK = parse_task({"name": "tx", "labels": ["food", "travel", "rent"], "slice": "meta.country"})


def test_objects_come_with_their_line_numbers_blank_lines_skipped():
    lines = [b'{"a": 1}', b"", b"   ", "\t", '{"b": 2}', b'{"c": "\xc3\xa9"}']
    assert list(read_jsonl(lines, "f.jsonl")) == [(1, {"a": 1}), (5, {"b": 2}), (6, {"c": "é"})]


@pytest.mark.parametrize("line, why", [
    (b"nope", r"f\.jsonl:2: not JSON \(.*\); each line must be a JSON object"),
    (b'{"a": 1} x', r"f\.jsonl:2: not JSON"),
    (b"[1, 2]", r"f\.jsonl:2: each line must be a JSON object$"),
    (b"null", r"f\.jsonl:2: each line must be a JSON object$"),
    (b"\xff\xfe", r"f\.jsonl:2: not UTF-8 text .*save the file as UTF-8"),
])
def test_a_bad_line_names_file_line_and_what_a_line_must_be(line, why):
    with pytest.raises(JsonlError, match=why):
        list(read_jsonl([b'{"ok": 1}', line], "f.jsonl"))


def test_callers_get_their_own_error_type_and_shape():
    with pytest.raises(KeyError, match="g.jsonl:1: each line must be one thing"):
        list(read_jsonl([b"1"], "g.jsonl", shape="one thing", error=KeyError))


def test_lines_are_read_lazily_up_to_the_bad_one():
    got = read_jsonl([b'{"a": 1}', b"bad"], "f.jsonl")
    assert next(got) == (1, {"a": 1})
    with pytest.raises(JsonlError, match="f.jsonl:2"):
        next(got)


@pytest.mark.parametrize("line, why", [
    (b"nope", "not JSON .*each line must be an object with id, input, output"),
    (b"[1]", "each line must be an object with id, input, output"),
    (b"\xff", "not UTF-8 text"),
])
def test_gold_lines_raise_gold_errors_naming_the_line(line, why):
    with pytest.raises(GoldError, match=f"gold.jsonl:3: {why}"):
        parse_gold_lines([b'{"id": "ok", "input": "y", "output": "food"}', b"", line], TASK, "gold.jsonl")


def test_verdict_lines_flat_and_label_studio_and_errors_naming_the_line():
    flat = b'{"id": "i1", "label": ["food"], "annotator": "ann"}'
    studio = (b'{"data": {"item_id": "i2"}, "annotations": [{"completed_by": {"email": "bo@x"}, '
              b'"result": [{"value": {"choices": ["rent"]}}]}, {"was_cancelled": true, "completed_by": 7}]}')
    got = parse_verdict_lines([flat, b"", studio], TASK, None, "v.jsonl")
    assert [(v["item_id"], v["reviewer"], v["action"], v.get("answer")) for v in got] == [
        ("i1", "ann", "submit", "food"), ("i2", "bo@x", "submit", "rent"), ("i2", "7", "discard", None)]
    assert parse_verdict_lines([flat], TASK, None, "v.jsonl")[0]["verdict_id"] == got[0]["verdict_id"]
    with pytest.raises(TransferError, match="v.jsonl:3: not JSON .*each line must be a JSON object"):
        parse_verdict_lines([flat, b"  ", b"{nope"], TASK, None, "v.jsonl")
    with pytest.raises(TransferError, match="v.jsonl:2: each line must be a JSON object"):
        parse_verdict_lines([flat, b'"text"'], TASK, None, "v.jsonl")
    with pytest.raises(TransferError, match="v.jsonl:1: no reviewer"):
        parse_verdict_lines([b'{"id": "i1", "answer": "food"}'], TASK, None, "v.jsonl")
