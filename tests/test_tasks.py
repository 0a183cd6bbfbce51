import pytest

from kernel.tasks import TaskConfigError, load_task_file, load_tasks, parse_task


def test_defaults():
    t = parse_task({"name": "tx", "labels": ["a", "b"]})
    assert t.min_confidence == 0.7 and t.near_duplicate_threshold == 0.8 and t.shingle_size == 5
    assert str(t.slice_rule) == "label" and not t.is_extraction


@pytest.mark.parametrize("doc, key, fix", [
    ({"labels": ["a"]}, "name", "required"),
    ({"name": "tx"}, "labels", "exactly one"),
    ({"name": "tx", "labels": []}, "labels", "non-empty"),
    ({"name": "tx", "labels": ["a", "a"]}, "labels", "repeated"),
    ({"name": "tx", "labels": ["a"], "min_confidence": 2}, "min_confidence", "between 0 and 1"),
    ({"name": "tx", "labels": ["a"], "min_confidence": "high"}, "min_confidence", "must be a number"),
    ({"name": "tx", "labels": ["a"], "near_duplicate_threshold": 0}, "near_duplicate_threshold", "between"),
    ({"name": "tx", "labels": ["a"], "slice": "country"}, "slice", "meta.<field>"),
    ({"name": "tx", "labels": ["a"], "min_confidance": 0.5}, "min_confidance", "unknown key"),
    ({"name": "tx", "output_schema": {"type": 7}}, "output_schema", "not a valid JSON Schema"),
    ({"name": "tx", "output_schema": {"type": "object"}}, "slice", "extraction task"),
    ({"name": "tx", "labels": ["a"], "drift": 3}, "drift", "table"),
])
def test_bad_task_names_the_key_and_the_fix(doc, key, fix):
    with pytest.raises(TaskConfigError) as err:
        parse_task(doc, "tasks/tx.toml")
    msg = str(err.value)
    assert msg.startswith("tasks/tx.toml: key '") and fix in msg
    if key != "min_confidence" or "unknown" not in fix:
        assert f"'{key}'" in msg or key in msg


def test_load_tasks_from_folder(tmp_path):
    (tmp_path / "a.toml").write_text('name = "a"\nlabels = ["x"]\n[train]\nlora_r = 4\n')
    (tmp_path / "b.toml").write_text('name = "b"\nlabels = ["y"]\nslice = "meta.region"\n')
    tasks = load_tasks(tmp_path)
    assert sorted(tasks) == ["a", "b"]
    assert tasks["a"].section("train") == {"lora_r": 4}
    assert tasks["b"].slice_rule.slice_of("y", {"region": "EU"}) == "EU"


def test_bad_toml_and_duplicates_and_empty(tmp_path):
    (tmp_path / "bad.toml").write_text("name = ")
    with pytest.raises(TaskConfigError, match="bad.toml.*not valid TOML"):
        load_task_file(tmp_path / "bad.toml")
    d = tmp_path / "d"
    d.mkdir()
    (d / "a.toml").write_text('name = "a"\nlabels = ["x"]\n')
    (d / "b.toml").write_text('name = "a"\nlabels = ["x"]\n')
    with pytest.raises(TaskConfigError, match="already declared"):
        load_tasks(d)
    with pytest.raises(TaskConfigError, match="no \\*.toml"):
        load_tasks(tmp_path / "missing_is_not_dir" if False else (tmp_path / "e").mkdir() or tmp_path / "e")
    with pytest.raises(TaskConfigError, match="not found"):
        load_tasks(tmp_path / "nope")


def test_shipped_example_task_is_valid():
    from pathlib import Path
    tasks = load_tasks(Path(__file__).parent.parent / "tasks")
    assert "transactions" in tasks
