"""`flywheel drift` and `flywheel retrain` against a real broker and the embedded store."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

from click.testing import CliRunner

from flywheel.cli import main
from kernel.warehouse import open_warehouse
from kernel.warehouse.migrate import apply_ddl
from tests.helpers.kafka import read_topic
from tests.helpers.testing import add_examples


def test_retrain_is_idempotent_and_drift_shows_and_charts(settings, tmp_path):
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    with open_warehouse(settings) as store:
        apply_ddl(store)
        add_examples(store, 10, now, task="transactions")
        for i, v in enumerate([0.01, 0.012, 0.2]):
            store.insert("drift_windows", [{"task": "transactions", "metric": "off_schema_rate", "detector": "adwin",
                                            "window_start": f"2026-01-01 00:0{i}:00", "window_seconds": 60, "n": 100,
                                            "value": v, "reference": 0.01, "statistic": 1.0,
                                            "verdict": "drift" if i == 2 else "ok", "alerts": int(i == 2),
                                            "detail": "{}", "updated_at": now}])
    env = {"FLYWHEEL_KAFKA_BOOTSTRAP": settings.kafka.servers, "FLYWHEEL_DATA_DIR": str(settings.data_dir),
           "FLYWHEEL_TASKS_DIR": str(settings.tasks_dir)}
    runner = CliRunner()
    first = runner.invoke(main, ["retrain", "--task", "transactions"], env=env)
    assert first.exit_code == 0, first.output
    assert "retrain requested: rr-transactions-" in first.output
    again = runner.invoke(main, ["retrain", "--task", "transactions"], env=env)
    assert again.exit_code == 0 and "already made" in again.output
    msgs = asyncio.run(read_topic(settings.kafka.servers, "retrain.requests", 1, timeout=5))
    assert len(msgs) == 1 and msgs[0]["reason"]["kind"] == "manual" and msgs[0]["watermark"] == now

    png = tmp_path / "c.png"
    shown = runner.invoke(main, ["drift", "--task", "transactions", "--metric", "off_schema_rate",
                                 "--chart", str(png)], env=env)
    assert shown.exit_code == 0, shown.output
    assert "drift" in shown.output and "0.2" in shown.output and png.read_bytes()[:4] == b"\x89PNG"
    bad = runner.invoke(main, ["drift", "--task", "nope"], env=env)
    assert bad.exit_code == 2 and "unknown task 'nope'" in bad.output
