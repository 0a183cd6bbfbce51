import orjson
import pytest

from kernel.gold import GoldError, current_version, import_gold, load_gold, parse_gold_lines
from kernel.tasks import parse_task

TASK = parse_task({"name": "tx", "labels": ["food", "travel"], "slice": "meta.country"})


def write(path, rows):
    path.write_bytes(b"\n".join(orjson.dumps(r) for r in rows))
    return path


def test_versions_grow_and_freeze(store, tmp_path):
    f1 = write(tmp_path / "g1.jsonl", [{"id": "a", "input": "coffee", "output": "food", "slice": "GB"},
                                      {"id": "b", "input": "taxi", "output": "travel", "meta": {"country": "FR"}}])
    r1 = import_gold(store, TASK, f1)
    assert (r1.version, r1.created, r1.n_total) == (1, True, 2)
    assert import_gold(store, TASK, f1).created is False  # same content: no new version
    f2 = write(tmp_path / "g2.jsonl", [{"id": "c", "input": "bus", "output": "travel", "slice": "GB"},
                                      {"id": "a", "input": "coffee beans", "output": "food", "slice": "GB"}])
    r2 = import_gold(store, TASK, f2)
    assert (r2.version, r2.n_total) == (2, 3)
    assert current_version(store, "tx") == 2
    v1 = {r["id"]: r for r in load_gold(store, "tx", 1)[1]}
    v2 = {r["id"]: r for r in load_gold(store, "tx", 2)[1]}
    assert v1["a"]["input"] == "coffee" and v2["a"]["input"] == "coffee beans"  # v1 unchanged
    assert v1["b"]["slice"] == "FR"  # derived by the task's slice rule


@pytest.mark.parametrize("line, why", [
    (b"nope", "not JSON"),
    (b'{"id": "a", "input": "x"}', "missing 'output'"),
    (b'{"id": "a", "input": "x", "output": "bogus"}', "not a label"),
    (b'{"id": "", "input": "x", "output": "food"}', "non-empty"),
])
def test_bad_lines_name_the_line(line, why):
    with pytest.raises(GoldError, match=f"gold.jsonl:2: .*{why}"):
        parse_gold_lines([b'{"id": "ok", "input": "y", "output": "food"}', line], TASK, "gold.jsonl")


def test_repeated_id_in_one_file_is_an_error():
    with pytest.raises(GoldError, match="twice"):
        parse_gold_lines([b'{"id": "a", "input": "y", "output": "food"}'] * 2, TASK, "g")
