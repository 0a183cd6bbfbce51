"""`examples` and `curation_events` never disagree after a crash: the writer (owning the
embedded store in its own process, so a kill can land inside an INSERT) is SIGKILLed at random
moments while it writes; each restart replays from the last batch it had finished, as a
consumer replays from its committed offset. Afterwards every kept outcome has its example and
every example its kept outcome, and nothing is lost or duplicated under FINAL."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from kernel.settings import load_settings
from kernel.tasks import parse_task
from kernel.warehouse import open_warehouse
from schemas.events import teacher_log_message
from streams.curate.policy import Curator, Message

pytestmark = pytest.mark.integration

TASK = {"name": "tx", "labels": ["food"], "min_confidence": 0.5}
BATCH, BATCHES = 100, 120
KILLS = 6

WRITER = r"""
import asyncio, sys, pathlib
from kernel.settings import load_settings
from kernel.stage import WorkerContext
from kernel.tasks import parse_task
from kernel.warehouse import open_warehouse
from kernel.warehouse.migrate import apply_ddl
from streams.curate.pipeline import CuratePipeline, load_state
from streams.curate.policy import Curator, Message
from tests.test_tables_agree import TASK, BATCH, BATCHES, stream

data, progress = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
start = int(progress.read_text()) if progress.exists() else 0
store = open_warehouse(load_settings({}, data_dir=data))
apply_ddl(store)
task = parse_task(TASK)
curator = Curator({"tx": task})
load_state(curator, store, 1_000_000)
pipeline = CuratePipeline(WorkerContext(load_settings({}), {"tx": task}, store, app=None), curator, None, None)
values = stream()
for b in range(start, BATCHES):
    msgs = [Message(v, 0, b * BATCH + i) for i, v in enumerate(values[b * BATCH:(b + 1) * BATCH])]
    asyncio.run(pipeline.process(msgs))
    tmp = progress.with_suffix('.tmp')   # the 'committed offset', written atomically
    tmp.write_text(str(b + 1))
    tmp.replace(progress)
print("done", flush=True)
"""


def stream() -> list[bytes]:
    out = []
    for i in range(BATCH * BATCHES):
        base = i // 5 if i % 5 == 4 else i       # every fifth an exact duplicate of an earlier one
        out.append(teacher_log_message(id=f"e{i:05d}", task="tx", input=f"merchant {base:05d} {base * 7919 % 10007}",
                                       output="food", confidence=0.9, teacher="t", ts="2026-11-21T10:00:00Z"))
    return out


def _wait_for_progress(proc: subprocess.Popen, progress, mark: int, timeout: float = 240.0) -> bool:
    """True once the writer has committed at least `mark` batches; False if it exited first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if int(progress.read_text() or 0) >= mark:
                return True
        except (FileNotFoundError, ValueError):
            pass
        time.sleep(0.005)
    return False


def test_killing_the_writer_never_leaves_the_tables_disagreeing(tmp_path):
    data, progress = tmp_path / "store", tmp_path / "progress"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    rng = random.Random(11)
    kills = 0
    for attempt in range(40):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(data), str(progress)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if kills < KILLS:
            # Kill relative to the writer's own progress, not the wall clock, so a fast machine
            # cannot finish before the kills land: wait until it has committed past the next
            # mark (spread over the run), then kill it a random moment later, inside a batch.
            mark = (kills + 1) * BATCHES // (KILLS + 2)
            if _wait_for_progress(proc, progress, mark):
                time.sleep(rng.uniform(0.0, 0.15))
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
                continue
        out = proc.communicate(timeout=300)[0]
        assert proc.returncode == 0, out.decode(errors="replace")[-3000:]
        break
    assert kills == KILLS, "the writer finished before it could be killed often enough: raise BATCHES"
    assert progress.read_text() == str(BATCHES)

    expected = Curator({"tx": parse_task(TASK)}).curate([Message(v) for v in stream()])
    kept = {d.log.id for d in expected if d.outcome == "kept"}
    with open_warehouse(load_settings({}, data_dir=data)) as store:
        outcomes = {r["id"]: r["outcome"] for r in store.rows("SELECT id, outcome FROM curation_events FINAL")}
        examples = {r["id"] for r in store.rows("SELECT id FROM examples FINAL")}
        assert outcomes == {d.log.id: d.outcome for d in expected}
        assert {i for i, o in outcomes.items() if o == "kept"} == examples == kept
        assert store.scalar("SELECT count() FROM examples FINAL") == len(kept)
