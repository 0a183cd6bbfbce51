"""Issue 12: a mistake gives one message naming the fix, the right exit code, and starts
nothing; the silent surprises say what happened."""

from __future__ import annotations

import orjson
import pytest
from click.testing import CliRunner

from flywheel.cli import main
from kernel.tasks import parse_task
from streams.curate.policy import Curator, Message
from streams.curate.rows import curation_event_row, event_id

TASK = 'name = "transactions"\nlabels = ["groceries", "transport"]\n'


def run(tmp_path, *args, env=None, tasks_text=TASK):
    tasks = tmp_path / "tasks"
    tasks.mkdir(exist_ok=True)
    (tasks / "transactions.toml").write_text(tasks_text)
    return CliRunner().invoke(main, ["--data-dir", str(tmp_path / "data"), "--tasks", str(tasks), *args],
                              env=env or {}, catch_exceptions=False)


@pytest.mark.parametrize("section, key, value", [
    ("trigger", "trigger_metrics", '["label_mix"]'),   # the README used to document this key
    ("drift", "off_schema", "{ delta = 0.1 }"),
    ("train", "epoch", "3"),
    ("gate", "tolerance", "0.1"),
])
def test_a_bad_section_key_stops_up_before_anything_starts(tmp_path, section, key, value):
    res = run(tmp_path, "up", "--listen", "127.0.0.1:1", tasks_text=f"{TASK}\n[{section}]\n{key} = {value}\n")
    assert res.exit_code == 2, res.output
    assert f"transactions.toml: key '{section}.{key}': unknown key; valid keys" in res.output
    assert "Traceback" not in res.output and "Usage:" not in res.output
    assert not (tmp_path / "data").exists()                   # no broker, no store: nothing started


def test_a_bad_section_value_stops_every_command(tmp_path):
    res = run(tmp_path, "models", "--task", "transactions", tasks_text=f"{TASK}\n[gate]\nslice_tolerance = 7\n")
    assert res.exit_code == 2 and "key 'gate.slice_tolerance': must be a number" in res.output


def test_produce_refuses_a_topic_outside_the_catalogue(tmp_path):
    f = tmp_path / "x.jsonl"
    f.write_text("{}\n")
    res = run(tmp_path, "produce", "--topic", "nope.topic", str(f))
    assert res.exit_code == 2
    assert "'nope.topic' is not one of flywheel's topics (option --topic); use one of: teacher.logs" in res.output


def test_produce_without_a_broker_is_one_line(tmp_path, capfd):
    f = tmp_path / "x.jsonl"
    f.write_text('{"task": "transactions"}\n')
    res = run(tmp_path, "produce", str(f), env={"FLYWHEEL_EMBEDDED_LISTEN": "127.0.0.1:1"})
    assert res.exit_code == 1
    assert res.output.strip() == ("Error: cannot reach the Kafka broker at 127.0.0.1:1: is `flywheel up` running "
                                  "(or FLYWHEEL_KAFKA_BOOTSTRAP set to a reachable broker)?")
    import gc
    gc.collect()
    assert "Unclosed AIOKafkaProducer" not in capfd.readouterr().err


def test_produce_counts_the_lines_that_are_not_json(tmp_path, broker):
    f = tmp_path / "x.jsonl"
    good = orjson.dumps({"task": "transactions", "id": "1"}).decode()
    f.write_text("\n".join([good, "{broken", good, "nope", "", "{also"]) + "\n")
    res = run(tmp_path, "produce", str(f), env={"FLYWHEEL_EMBEDDED_LISTEN": broker.bootstrap})
    assert res.exit_code == 0, res.output
    assert (f"published 5 messages to teacher.logs at {broker.bootstrap}: 2 JSON, 3 not JSON (lines 2, 4, 6; "
            "the worker routes those to dead.letters)") in res.output


def test_unsupported_sasl_mechanism_is_a_config_error(tmp_path):
    f = tmp_path / "x.jsonl"
    f.write_text("{}\n")
    res = run(tmp_path, "produce", str(f), env={"FLYWHEEL_KAFKA_SASL_MECHANISM": "GSSAPI",
                                                "FLYWHEEL_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"})
    assert res.exit_code == 2
    assert "FLYWHEEL_KAFKA_SASL_MECHANISM='GSSAPI' is not supported: use one of PLAIN, SCRAM-SHA-256" in res.output


def test_sql_in_a_directory_without_a_store_says_so_and_creates_nothing(tmp_path):
    res = run(tmp_path, "sql", "SELECT count() FROM examples")
    assert res.exit_code == 1
    assert f"there is no flywheel store under {(tmp_path / 'data').resolve()}: run this where you ran" in res.output
    assert not (tmp_path / "data").exists()


def test_sql_against_an_unreachable_clickhouse_server(tmp_path):
    res = run(tmp_path, "sql", "SELECT 1", env={"FLYWHEEL_CLICKHOUSE_URL": "http://127.0.0.1:1/flywheel"})
    assert res.exit_code == 1
    assert res.output.strip().startswith("Error: cannot reach the ClickHouse server at http://127.0.0.1:1 (")
    assert "is FLYWHEEL_CLICKHOUSE_URL right?" in res.output and "Traceback" not in res.output


def test_clickhouse_message_once():
    from kernel.warehouse import clickhouse_message

    nested = ("HTTPDriver for http://ch:8123 received ClickHouse error code 60\n Code: 60. DB::Exception: "
              "Code: 60. DB::Exception: Unknown table nosuch. (UNKNOWN_TABLE) (version 24.8.1.1). (UNKNOWN_TABLE) "
              "(version 24.8.1.1)\nStack trace:\n0. DB::Exception::Exception")
    assert clickhouse_message(nested) == "Code: 60. DB::Exception: Unknown table nosuch. (UNKNOWN_TABLE)"
    assert clickhouse_message("plain words") == "plain words"


TX = parse_task({"name": "tx", "labels": ["a", "b"]})


def test_an_invalid_line_sent_twice_is_one_event_and_carries_its_task():
    raw = b'{"id": "broken-1", "task": "tx", "input": '
    c = Curator({"tx": TX})
    first, = c.curate([Message(raw, partition=0, offset=5)])
    again, = c.curate([Message(raw, partition=2, offset=900)])   # the same file, published again
    other, = c.curate([Message(raw + b" ", partition=0, offset=5)])
    assert first.outcome == again.outcome == "invalid"
    assert event_id(first) == event_id(again) != event_id(other)
    assert curation_event_row(first, first_time())["task"] == "tx"
    unknown, = c.curate([Message(b'{"task": "nosuch", "id": 1}')])
    assert curation_event_row(unknown, first_time())["task"] == ""     # only declared tasks
    schema, = c.curate([Message(orjson.dumps({"id": "x", "task": "tx"}))])
    assert schema.outcome == "invalid" and curation_event_row(schema, first_time())["task"] == "tx"


def first_time():
    from datetime import datetime, timezone

    return datetime(2026, 1, 1, tzinfo=timezone.utc)
