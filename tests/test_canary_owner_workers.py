"""Two stream workers of one consumer group on the real broker: each task's canary judge runs in
exactly one of them (the one assigned the task's canary.pairs partition), and when one worker
leaves, the other judges every task."""

from __future__ import annotations

import re

import pytest

from schemas.topics import CANARY_PAIRS
from streams.canary.pairs import owner_partition
from tests.helpers.testing import owned_store
from tests.worker import WorkerProcess, wait_for

pytestmark = pytest.mark.integration


def task_names() -> list[str]:
    """Two task names per canary.pairs partition."""
    out: dict[int, list[str]] = {}
    i = 0
    while any(len(out.get(p, [])) < 2 for p in range(CANARY_PAIRS.partitions)):
        name = f"t{i}"
        out.setdefault(owner_partition(name, CANARY_PAIRS.partitions), []).append(name)
        i += 1
    return sorted(n for p in range(CANARY_PAIRS.partitions) for n in out[p][:2])


def judged(w: WorkerProcess) -> set[str] | None:
    """The tasks the worker said it judges last (None before it said)."""
    lines = re.findall(r"canary: this worker judges (.*)", w.log())
    if not lines:
        return None
    last = lines[-1].strip()
    return set() if last == "no task" else set(last.split(", "))


def test_each_task_is_judged_by_one_worker_of_the_group(settings, tasks_dir, tmp_path):
    for n in task_names():
        (tasks_dir / f"{n}.toml").write_text(f'name = "{n}"\nlabels = ["a", "b"]\n')
    names = sorted(p.stem for p in tasks_dir.glob("*.toml"))   # with the fixture's own task
    assert len({owner_partition(n, CANARY_PAIRS.partitions) for n in names}) == CANARY_PAIRS.partitions
    with owned_store(settings):
        a = WorkerProcess(settings, tmp_path / "a.log", worker_only=True).start()
        b = None
        try:
            wait_for(lambda: judged(a) == set(names), 60, what="a alone judges every task")
            b = WorkerProcess(settings, tmp_path / "b.log", worker_only=True).start()

            def split():
                ja, jb = judged(a), judged(b)
                return ja is not None and jb is not None and ja and jb and not ja & jb and ja | jb == set(names)

            wait_for(split, 90, what=f"a and b to split the tasks: a {judged(a)}, b {judged(b)}")
            ja, jb = judged(a), judged(b)
            # whole partitions: the two tasks of one partition are judged by the same worker
            for side in (ja, jb):
                parts = {owner_partition(n, CANARY_PAIRS.partitions) for n in side}
                assert side == {n for n in names if owner_partition(n, CANARY_PAIRS.partitions) in parts}
            assert b.stop() == 0
            b = None
            wait_for(lambda: judged(a) == set(names), 60, what="a judges every task again after b left")
        finally:
            if b is not None:
                b.kill()
            a.stop()
