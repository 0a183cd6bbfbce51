import orjson
import pytest

from kernel.tasks import label_of, parse_task
from schemas.events import teacher_log_message
from streams.curate.policy import Curator, Invalid, Message, check_confidence, check_output, decode

TX = parse_task({"name": "tx", "labels": ["food", "travel"], "min_confidence": 0.5, "slice": "meta.country"})
EXTRACT = parse_task({"name": "ex", "output_schema": {
    "type": "object", "required": ["amount"], "properties": {"amount": {"type": "number"}}},
    "slice": "meta.source", "min_confidence": 0.5})
TASKS = {"tx": TX, "ex": EXTRACT}


def log(id="1", task="tx", input="Starbucks coffee 123 Main street", output="food", confidence=0.9, **kw):
    return teacher_log_message(id=id, task=task, input=input, output=output, confidence=confidence,
                               teacher="teacher-x", **kw)


def outcomes(curator, *msgs):
    return [(d.outcome, d.log.id if d.log else None) for d in curator.curate([Message(m) for m in msgs])]


@pytest.mark.parametrize("raw, why", [
    (None, "empty"),
    (b"\xff\xfe\x00", "not JSON"),
    (b"[1, 2]", "schema"),
    (b'{"id": "x"}', "schema"),
    (orjson.dumps({**orjson.loads(log()), "confidence": 1.5}), "confidence"),
    (orjson.dumps({**orjson.loads(log()), "ts": "yesterday"}), "ts"),
    (orjson.dumps({**orjson.loads(log()), "schema_version": 2}), "schema_version"),
    (log(task="unknown"), "unknown task"),
])
def test_decode_rejects_with_a_reason(raw, why):
    with pytest.raises(Invalid, match=why):
        decode(raw, TASKS)


def test_ts_without_offset_is_invalid():
    with pytest.raises(Invalid, match="ts must be date-time"):
        decode(orjson.dumps({**orjson.loads(log()), "ts": "2026-01-01T00:00:00"}), TASKS)


def test_check_output_labels_and_extraction_schema():
    assert check_output(decode(log(), TASKS), TX) is None
    assert "not a label" in check_output(decode(log(output="bogus"), TASKS), TX)
    assert "string" in check_output(decode(log(output={"a": 1}), TASKS), TX)
    assert check_output(decode(log(task="ex", output={"amount": 3.5}), TASKS), EXTRACT) is None
    assert "output_schema" in check_output(decode(log(task="ex", output={"amount": "x"}), TASKS), EXTRACT)
    assert "JSON object" in check_output(decode(log(task="ex", output="food"), TASKS), EXTRACT)


def test_confidence_floor_is_inclusive():
    assert check_confidence(decode(log(confidence=0.5), TASKS), TX) is None
    assert "below" in check_confidence(decode(log(confidence=0.49), TASKS), TX)


def test_label_of_object_is_canonical_json():
    assert label_of({"b": 1, "a": 2}) == '{"a":2,"b":1}'


def test_every_outcome_in_order():
    c = Curator(TASKS)
    c.load_gold("tx", ["g1"], ["Gold reference coffee purchase downtown"])
    got = outcomes(
        c,
        b"not json",
        log(id="off", output="bogus", confidence=0.1),           # off_schema before low_conf
        log(id="low", input="gold reference coffee purchase downtown", confidence=0.1),  # low_conf before gold
        log(id="gold", input="Gold reference coffee purchase downtown!"),
        log(id="k1"),
        log(id="dup", input="starbucks   COFFEE 123 main street"),
        log(id="near", input="Starbucks coffee 123 Main streets"),
        log(id="k2", input="Uber trip to the airport", output="travel"),
    )
    assert got == [("invalid", None), ("off_schema", "off"), ("low_conf", "low"), ("gold_overlap", "gold"),
                   ("kept", "k1"), ("exact_dupe", "dup"), ("near_dupe", "near"), ("kept", "k2")]


def test_dedupe_is_per_task():
    c = Curator(TASKS)
    got = outcomes(c, log(id="a", input="same text in two tasks"),
                   log(id="b", task="ex", input="same text in two tasks", output={"amount": 1}))
    assert got == [("kept", "a"), ("kept", "b")]


def test_replayed_id_is_kept_again_not_its_own_duplicate():
    c = Curator(TASKS)
    first = c.curate([Message(log(id="a"))])
    again = c.curate([Message(log(id="a"))])
    assert first[0].outcome == "kept" and not first[0].replay
    assert again[0].outcome == "kept" and again[0].replay


def test_duplicates_within_one_batch_and_across_batches_agree():
    one = Curator(TASKS)
    batch = [Message(log(id=str(i), input=f"merchant {i % 7} paid by card")) for i in range(30)]
    together = [d.outcome for d in one.curate(batch)]
    two = Curator(TASKS)
    apart = [d.outcome for m in batch for d in two.curate([m])]
    assert together == apart
    assert together.count("kept") == 7


def test_slice_from_meta_and_label():
    c = Curator({"tx": TX})
    d = c.curate([Message(log(meta={"country": "GB"}))])[0]
    assert d.slice == "GB" and d.label == "food"
    by_label = parse_task({"name": "tx", "labels": ["food"], "slice": "label"})
    d = Curator({"tx": by_label}).curate([Message(log(id="z"))])[0]
    assert d.slice == "food"


def test_state_reload_gives_the_same_decisions():
    """A restarted worker rebuilt from the kept examples decides like the one that never stopped."""
    live = Curator(TASKS)
    stream = [Message(log(id=str(i), input=f"shop {i % 5} order number {i % 3}")) for i in range(20)]
    first, rest = stream[:10], stream[10:]
    decided = live.curate(first)
    kept = [(d.log.id, d.log.input) for d in decided if d.outcome == "kept"]
    restarted = Curator(TASKS)
    restarted.load_pool("tx", [k[0] for k in kept], [k[1] for k in kept])
    assert [d.outcome for d in restarted.curate(rest)] == [d.outcome for d in live.curate(rest)]
