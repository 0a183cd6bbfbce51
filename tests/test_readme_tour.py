"""The README's five-minute tour, run as a script: the commands of its code block, in order,
parsed from README.md (so the README cannot drift from the code), against a real embedded
broker and store in a temporary data dir. It must end with an approved model.

A person reads `flywheel up`'s banner before typing on and lets curation finish before asking
for a retrain; the runner waits for the same signs (the "worker ready" line; every published
line has an outcome) and does nothing else between the commands.

Also checked: every key the README's task-file block names is accepted by its section's parser.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
FLYWHEEL = [sys.executable, "-c", "from flywheel.cli import main; main()"]


def code_block(heading: str, lang: str) -> str:
    """The first ```lang block after the markdown heading."""
    start = README.index(heading)
    m = re.compile(rf"```{lang}\n(.*?)```", re.S).search(README, start)
    assert m, f"no ```{lang} block after {heading!r} in README.md"
    return m.group(1)


def tour_commands() -> list[str]:
    lines = []
    for raw in code_block("## A five-minute tour", "bash").splitlines():
        line = raw.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def test_tour_block_is_what_the_runner_understands():
    cmds = tour_commands()
    assert cmds[0] == "source .venv/bin/activate"
    assert cmds[1] == "flywheel up &"
    assert all(c.startswith("flywheel ") for c in cmds[1:]), cmds
    names = [shlex.split(c)[1] for c in cmds[1:]]
    for needed in ("gold", "produce", "retrain", "train-worker", "models"):
        assert needed in names, f"the tour lost its `flywheel {needed}` step"


def test_readme_task_keys_are_the_parsers_keys():
    """Every key the README's task block names, in a section comment or as a key, is accepted."""
    from flywheel.cli import SECTION_PARSERS
    from kernel.tasks import TaskConfigError, parse_task

    block = code_block("## Tasks", "toml")
    doc = tomllib.loads(block)
    parse_task(doc, "README.md")  # the top-level keys, as written
    named: dict[str, list[str]] = {}
    for sec, comment in re.findall(r"^\[(\w+)\]\s*#\s*(.*)$", block, re.M):
        keys = [k.strip() for k in comment.split(",")]
        named[sec] = [k for k in keys if re.fullmatch(r"[a-z_]+", k)]
    named.update({sec: named.get(sec, []) + [key] for sec, key in
                  re.findall(r"`\[(trigger|drift|train|gate)\] (\w+)`", README)})
    assert set(named) >= {"trigger", "train", "gate"}, named
    for sec, keys in named.items():
        for key in keys:
            task = parse_task({**doc, sec: {key: object()}}, "README.md")  # a value no parser takes
            with pytest.raises(TaskConfigError) as err:
                SECTION_PARSERS[sec](task)
            assert "unknown key" not in str(err.value), f"README names [{sec}] {key}: {err.value}"


def _run(args: list[str], env: dict, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _published_lines(path: Path) -> int:
    return sum(1 for line in path.read_bytes().splitlines() if line.strip())


@pytest.mark.integration
@pytest.mark.slow
def test_the_readme_tour_ends_with_an_approved_model(tmp_path):
    env = {**os.environ, "FLYWHEEL_DATA_DIR": str(tmp_path / "data"),
           "FLYWHEEL_EMBEDDED_LISTEN": f"127.0.0.1:{free_port()}", "FLYWHEEL_SINK_FLUSH_SECONDS": "0.3",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.pop("FLYWHEEL_KAFKA_BOOTSTRAP", None)
    env.pop("FLYWHEEL_CLICKHOUSE_URL", None)
    up_log = tmp_path / "up.log"
    up: subprocess.Popen | None = None
    transcript: list[str] = []

    def sql(query: str) -> str:
        return _run(FLYWHEEL + ["sql", "--format", "TSV", query], env, 60).stdout.strip()

    try:
        for line in tour_commands():
            if line.startswith("source "):
                continue  # the runner's interpreter is the venv's
            args = shlex.split(line.rstrip("&").strip())[1:]
            if line.endswith("&"):
                up = subprocess.Popen(FLYWHEEL + args, cwd=ROOT, env=env, stdout=open(up_log, "wb"),
                                      stderr=subprocess.STDOUT)
                deadline = time.monotonic() + 120
                while b"worker     ready" not in up_log.read_bytes():
                    assert up.poll() is None, f"`{line}` exited:\n{up_log.read_text()[-3000:]}"
                    assert time.monotonic() < deadline, f"`{line}` not ready:\n{up_log.read_text()[-3000:]}"
                    time.sleep(0.3)
                continue
            res = _run(FLYWHEEL + args, env, 900)
            transcript.append(f"$ {line}\n{res.stdout}{res.stderr[-2000:]}")
            assert res.returncode == 0, "\n".join(transcript)
            if args[0] == "produce":
                want = _published_lines(ROOT / args[-1])
                deadline = time.monotonic() + 120
                while sql("SELECT count() FROM curation_events FINAL") != str(want):
                    assert time.monotonic() < deadline, "curation did not finish:\n" + up_log.read_text()[-3000:]
                    time.sleep(0.5)
        out = "\n".join(transcript)
        assert "APPROVED" in out and "REJECTED" not in out, out
        models = [ln for ln in transcript[-1].splitlines() if ln.startswith("transactions-v")]
        assert len(models) == 1 and " approved " in models[0], transcript[-1]
        banner = up_log.read_text()
        assert "[INFO]" not in banner.split("worker     ready")[0], banner  # the banner is readable
    finally:
        if up is not None and up.poll() is None:
            up.send_signal(signal.SIGINT)
            try:
                up.wait(60)
            except subprocess.TimeoutExpired:
                up.kill()
