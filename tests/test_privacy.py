"""PII redaction rules (kernel.privacy): pure unit tests."""

from __future__ import annotations

import pytest

from kernel.privacy import iban_ok, luhn_ok, privacy_config
from kernel.tasks import TaskConfigError, parse_task


def rules(**section):
    return privacy_config(parse_task({"name": "tx", "labels": ["a"], "privacy": section}, "tasks/tx.toml"))


ALL = rules(rules=["email", "card", "phone", "iban"], custom={"employee": r"EMP-\d{6}"})


def test_checksums():
    assert luhn_ok("4111111111111111") and luhn_ok("79927398713")
    assert not luhn_ok("4111111111111112")
    assert iban_ok("GB82WEST12345698765432") and iban_ok("DE89 3704 0044 0532 0130 00")
    assert not iban_ok("GB82WEST12345698765433") and not iban_ok("GB82")


@pytest.mark.parametrize("text, expected, counts", [
    ("refund to jane.doe+shop@example.co.uk today", "refund to [EMAIL] today", {"email": 1}),
    ("CARD 4111 1111 1111 1111 TESCO", "CARD [CARD] TESCO", {"card": 1}),
    ("card 4111-1111-1111-1111 and 5500005555555559", "card [CARD] and [CARD]", {"card": 2}),
    ("ORDER 4111111111111112 REF", "ORDER 4111111111111112 REF", {}),              # fails Luhn: kept
    ("IBAN GB82 WEST 1234 5698 7654 32 rent", "IBAN [IBAN] rent", {"iban": 1}),
    ("to DE89370400440532013000.", "to [IBAN].", {"iban": 1}),
    ("GB82WEST12345698765433 bad check", "GB82WEST12345698765433 bad check", {}),  # fails mod 97
    ("call +44 20 7946 0958 now", "call [PHONE] now", {"phone": 1}),
    ("call (555) 123-4567", "call [PHONE]", {"phone": 1}),
    ("tel 555-123-4567", "tel [PHONE]", {"phone": 1}),
    ("ring 020 7946 0958", "ring [PHONE]", {"phone": 1}),
    ("TESCO STORES 3341 LONDON", "TESCO STORES 3341 LONDON", {}),                # short numbers stay
    ("paid 1234.56 on 2026-11-21", "paid 1234.56 on 2026-11-21", {}),            # amounts and dates stay
    ("staff EMP-123456 badge", "staff [EMPLOYEE] badge", {"employee": 1}),
    ("a@b.io, 4111111111111111, +33 1 23 45 67 89", "[EMAIL], [CARD], [PHONE]",
     {"email": 1, "card": 1, "phone": 1}),
])
def test_redaction(text, expected, counts):
    assert ALL.redact(text) == (expected, counts)


def test_only_the_rules_asked_for_and_a_custom_replacement():
    only_email = rules(rules=["email"], replacement="<{rule}>")
    assert only_email.redact("x@y.com 4111111111111111") == ("<EMAIL> 4111111111111111", {"email": 1})
    assert not rules().enabled
    assert not privacy_config(parse_task({"name": "tx", "labels": ["a"]})).enabled


def test_redaction_never_leaves_the_original():
    text = "mail bob@corp.com or card 4111111111111111 or GB82WEST12345698765432"
    out, _ = ALL.redact(text)
    assert "bob@corp.com" not in out and "4111" not in out and "GB82" not in out


@pytest.mark.parametrize("section, key, fix", [
    ({"rules": ["emails"]}, "privacy.rules", "must be one of"),
    ({"rules": "email"}, "privacy.rules", "must be a list"),
    ({"rules": ["email", "email"]}, "privacy.rules", "twice"),
    ({"rulez": ["email"]}, "privacy.rulez", "unknown key"),
    ({"custom": {"x": "("}}, "privacy.custom.x", "not a valid regular expression"),
    ({"custom": {"x": "a*"}}, "privacy.custom.x", "empty string"),
    ({"custom": {"email": "x"}}, "privacy.custom.email", "built-in"),
    ({"custom": "EMP"}, "privacy.custom", "must be a table"),
    ({"replacement": 3}, "privacy.replacement", "must be a string"),
])
def test_bad_section_names_the_key_and_the_fix(section, key, fix):
    with pytest.raises(TaskConfigError) as err:
        rules(**section)
    assert f"key '{key}'" in str(err.value) and fix in str(err.value)


# -- wired in: the curate path and the gold set, on a real embedded ClickHouse store -----------
PII_TASK = {"name": "tx", "labels": ["food", "rent"], "min_confidence": 0.5,
            "privacy": {"rules": ["email", "card", "phone", "iban"], "custom": {"employee": r"EMP-\d{6}"}}}
RAW = ["lunch paid with 4111 1111 1111 1111 at PRET",
       "rent to GB82WEST12345698765432 for jane@example.com",
       "canteen EMP-123456 call +44 20 7946 0958",
       "low confidence one, card 5500005555555559"]
SECRETS = ["4111", "GB82WEST", "jane@example.com", "EMP-123456", "7946", "5500005555555559"]


def test_inputs_are_redacted_before_the_training_pool_and_counted(store):
    import asyncio

    from kernel.settings import load_settings
    from kernel.stage import WorkerContext
    from schemas.events import teacher_log_message
    from streams.curate.pipeline import CuratePipeline
    from streams.curate.policy import Curator, Message
    from tests.helpers.kafka import SentValues

    task = parse_task(PII_TASK, "tasks/tx.toml")
    out = SentValues()
    ctx = WorkerContext(load_settings({}), {"tx": task}, store, app=out)
    pipeline = CuratePipeline(ctx, Curator({"tx": task}), out, out)
    msgs = [Message(teacher_log_message(id=f"p{i}", task="tx", input=text, output="rent" if i == 1 else "food",
                                        confidence=0.2 if i == 3 else 0.9, teacher="t"), 0, i)
            for i, text in enumerate(RAW)]
    asyncio.run(pipeline.process(msgs))
    reviewed = out.sent

    examples = store.rows("SELECT id, input FROM examples FINAL ORDER BY id")
    assert examples == [{"id": "p0", "input": "lunch paid with [CARD] at PRET"},
                        {"id": "p1", "input": "rent to [IBAN] for [EMAIL]"},
                        {"id": "p2", "input": "canteen [EMPLOYEE] call [PHONE]"}]
    counts = {r["id"]: r["redactions"] for r in store.rows("SELECT id, redactions FROM curation_events FINAL")}
    assert counts == {"p0": {"card": 1}, "p1": {"email": 1, "iban": 1}, "p2": {"phone": 1, "employee": 1},
                      "p3": {"card": 1}}
    # nothing raw anywhere in the store's tables, nor in the review item of the low-confidence one
    everything = store.query("SELECT * FROM examples FORMAT JSONEachRow").decode() + \
        store.query("SELECT * FROM curation_events FORMAT JSONEachRow").decode()
    assert not [s for s in SECRETS if s in everything]
    assert len(reviewed) == 1 and not [s for s in SECRETS if s.encode() in reviewed[0]]


def test_gold_imports_are_redacted_and_counted(store, tmp_path):
    import orjson

    from kernel.gold import import_gold, load_gold

    task = parse_task(PII_TASK, "tasks/tx.toml")
    path = tmp_path / "gold.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps({"id": f"g{i}", "input": t, "output": "food"})
                                for i, t in enumerate(RAW)))
    res = import_gold(store, task, path)
    assert res.redactions == {"card": 2, "iban": 1, "email": 1, "employee": 1, "phone": 1}
    _, rows = load_gold(store, "tx")
    assert [r["input"] for r in rows][0] == "lunch paid with [CARD] at PRET"
    assert not [s for s in SECRETS if any(s in r["input"] for r in rows)]
    assert store.scalar("SELECT sum(redactions['card']) FROM gold_examples FINAL") == 2
