"""The core CLI commands, run in-process with click's runner against a real embedded store."""

import orjson
from click.testing import CliRunner

from flywheel.cli import main
from tests.helpers.testing import make_store


def run(tmp_path, *args, tasks=None):
    runner = CliRunner()
    return runner.invoke(main, ["--data-dir", str(tmp_path / "data"), "--tasks", str(tasks or tmp_path / "tasks"),
                                *args], catch_exceptions=False)


def test_help_explains_every_command(tmp_path):
    out = run(tmp_path, "--help").output
    assert "FLYWHEEL_KAFKA_BOOTSTRAP" in out
    for name, cmd in main.commands.items():
        assert f"  {name} " in out, name                      # listed, with its summary
        sub = run(tmp_path, name, "--help")
        assert sub.exit_code == 0 and cmd.help and cmd.help.split()[:4] == sub.output.split("\n\n")[1].split()[:4], name


def test_global_options_work_after_the_command(tmp_path):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "tx.toml").write_text('name = "tx"\nlabels = ["a"]\n')
    make_store(tmp_path / "d")
    res = CliRunner().invoke(main, ["sql", "SELECT 41 + 1", "--format", "TSV", "--data-dir", str(tmp_path / "d"),
                                    "--tasks", str(tasks)])
    assert res.exit_code == 0, res.output
    assert res.output.strip() == "42"                         # the option reached the root group


def test_unknown_task_is_a_usage_error_with_the_same_message_everywhere(tmp_path):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "tx.toml").write_text('name = "tx"\nlabels = ["a"]\n')
    for args in (["models", "--task", "nosuch"], ["drift", "--task", "nosuch"], ["retrain", "--task", "nosuch"],
                 ["gate", "--task", "nosuch", "--predictions", "x.jsonl"]):
        res = run(tmp_path, *args, tasks=tasks)
        assert res.exit_code == 2, (args, res.output)
        assert "Error: unknown task 'nosuch' (option --task); tasks declared in" in res.output, args
        assert res.output.rstrip().endswith(": tx"), args


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
    make_store(tmp_path / "data")
    res = run(tmp_path, "sql", "SELECT count() AS n FROM curation_events", "--format", "JSONEachRow",
              tasks=tasks_dir)
    assert res.exit_code == 0, res.output
    assert orjson.loads(res.output) == {"n": 0}
    res = run(tmp_path, "sql", "SELECT 1 AS one", tasks=tasks_dir)
    assert "one" in res.output and "1" in res.output  # a readable table by default


def test_sql_error_is_clickhouse_message(tmp_path, tasks_dir):
    make_store(tmp_path / "data")
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
