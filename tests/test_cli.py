"""The core CLI commands, run in-process with click's runner against a real embedded store."""

import orjson
from click.testing import CliRunner

from streams.cli import main


def run(tmp_path, *args, tasks=None):
    runner = CliRunner()
    return runner.invoke(main, ["--data-dir", str(tmp_path / "data"), "--tasks", str(tasks or tmp_path / "tasks"),
                                *args], catch_exceptions=False)


def test_help_explains_every_command(tmp_path):
    out = run(tmp_path, "--help").output
    for cmd in ("up", "sql", "gold", "produce"):
        assert cmd in out
    assert "FLYWHEEL_KAFKA_BOOTSTRAP" in out


def test_bad_task_file_fails_up_naming_file_key_and_fix(tmp_path):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "tx.toml").write_text('name = "tx"\nlabels = ["a"]\nmin_confidence = 7\n')
    res = run(tmp_path, "up")
    assert res.exit_code != 0
    assert "tx.toml: key 'min_confidence': must be between 0 and 1, got 7" in res.output


def test_missing_task_folder_names_the_fix(tmp_path):
    res = run(tmp_path, "up", tasks=tmp_path / "nowhere")
    assert res.exit_code != 0 and "--tasks" in res.output


def test_sql_without_a_running_worker_opens_the_store(tmp_path, tasks_dir):
    res = run(tmp_path, "sql", "SELECT count() AS n FROM curation_events", "--format", "JSONEachRow",
              tasks=tasks_dir)
    assert res.exit_code == 0, res.output
    assert orjson.loads(res.output) == {"n": 0}
    res = run(tmp_path, "sql", "SELECT 1 AS one", tasks=tasks_dir)
    assert "one" in res.output and "1" in res.output  # a readable table by default


def test_sql_error_is_clickhouse_message(tmp_path, tasks_dir):
    res = run(tmp_path, "sql", "SELECT * FROM nope", tasks=tasks_dir)
    assert res.exit_code == 1 and "UNKNOWN_TABLE" in res.output


def test_gold_import_reports_version_and_bad_lines(tmp_path, tasks_dir):
    good = tmp_path / "gold.jsonl"
    good.write_text('{"id": "g1", "input": "TESCO 1", "output": "groceries", "slice": "GB"}\n')
    res = run(tmp_path, "gold", "import", "--task", "transactions", str(good), tasks=tasks_dir)
    assert res.exit_code == 0 and "v1: 1 examples" in res.output
    res = run(tmp_path, "gold", "import", "--task", "transactions", str(good), tasks=tasks_dir)
    assert "unchanged" in res.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "g2", "input": "X", "output": "crypto"}\n')
    res = run(tmp_path, "gold", "import", "--task", "transactions", str(bad), tasks=tasks_dir)
    assert res.exit_code == 1 and "bad.jsonl:1" in res.output and "not a label" in res.output
    res = run(tmp_path, "gold", "import", "--task", "nope", str(good), tasks=tasks_dir)
    assert res.exit_code == 2 and "unknown task 'nope'" in res.output
