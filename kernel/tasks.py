"""Task declarations: one TOML file per narrow job the teacher does.

A task declares its valid outputs, the curation thresholds and how a slice is derived. Later
stages read their own sections ([drift], [trigger], [train], [gate], [canary]) through their
own typed parsers; this module keeps them as plain tables and rejects unknown keys so a typo
fails at start-up rather than silently doing nothing.

    name = "transactions"
    labels = ["groceries", "transport", "rent"]
    min_confidence = 0.7
    near_duplicate_threshold = 0.8
    slice = "meta.country"          # or "label" (default)
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fastjsonschema
import orjson

SECTIONS = ("drift", "trigger", "train", "gate", "canary", "promotion", "privacy", "review")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class TaskConfigError(ValueError):
    """A task file is wrong. The message names the file, the key and the fix."""

    def __init__(self, file: str | Path, key: str, problem: str) -> None:
        self.file, self.key, self.problem = str(file), key, problem
        super().__init__(f"{file}: key '{key}': {problem}")


@dataclass(frozen=True)
class SliceRule:
    """Where an example's slice comes from: its label, or one field of its meta object."""

    source: str  # "label" or "meta"
    field: str | None = None

    def slice_of(self, label: str, meta: dict) -> str:
        if self.source == "label":
            return label
        value = meta.get(self.field) if meta else None
        return "" if value is None else str(value)

    def __str__(self) -> str:
        return "label" if self.source == "label" else f"meta.{self.field}"


@dataclass(frozen=True)
class TaskConfig:
    name: str
    labels: tuple[str, ...] | None
    output_schema: dict | None
    min_confidence: float
    near_duplicate_threshold: float
    shingle_size: int
    slice_rule: SliceRule
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: str = "<memory>"

    @property
    def is_extraction(self) -> bool:
        return self.output_schema is not None

    def section(self, name: str) -> dict[str, Any]:
        return self.sections.get(name, {})


_TOP_KEYS = {"name", "labels", "output_schema", "min_confidence", "near_duplicate_threshold",
             "shingle_size", "slice", "description", *SECTIONS}


def _number(file, key, value, lo, hi, default):
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TaskConfigError(file, key, f"must be a number between {lo} and {hi}, got {value!r}")
    if not lo <= value <= hi:
        raise TaskConfigError(file, key, f"must be between {lo} and {hi}, got {value}")
    return float(value)


def parse_task(doc: dict[str, Any], file: str | Path = "<memory>") -> TaskConfig:
    unknown = sorted(set(doc) - _TOP_KEYS)
    if unknown:
        raise TaskConfigError(file, unknown[0], f"unknown key; valid keys are {sorted(_TOP_KEYS)}")
    name = doc.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise TaskConfigError(file, "name", "required: letters, digits, '_', '.', '-' (e.g. name = \"transactions\")")

    labels = doc.get("labels")
    schema = doc.get("output_schema")
    if (labels is None) == (schema is None):
        raise TaskConfigError(file, "labels", "give exactly one of 'labels' (a list of valid outputs) "
                                              "or 'output_schema' (a JSON Schema table for extraction tasks)")
    if labels is not None:
        if (not isinstance(labels, list) or not labels
                or not all(isinstance(x, str) and x for x in labels)):
            raise TaskConfigError(file, "labels", 'must be a non-empty list of strings, e.g. labels = ["a", "b"]')
        if len(set(labels)) != len(labels):
            raise TaskConfigError(file, "labels", "has a repeated label; list each once")
        labels = tuple(labels)
    if schema is not None:
        if not isinstance(schema, dict):
            raise TaskConfigError(file, "output_schema", "must be a table holding a JSON Schema")
        try:
            fastjsonschema.compile(schema)
        except fastjsonschema.JsonSchemaDefinitionException as exc:
            raise TaskConfigError(file, "output_schema", f"is not a valid JSON Schema: {exc}") from None

    min_conf = _number(file, "min_confidence", doc.get("min_confidence"), 0, 1, 0.7)
    near = _number(file, "near_duplicate_threshold", doc.get("near_duplicate_threshold"), 0.05, 1, 0.8)
    shingle = doc.get("shingle_size", 5)
    if isinstance(shingle, bool) or not isinstance(shingle, int) or not 1 <= shingle <= 16:
        raise TaskConfigError(file, "shingle_size", f"must be an integer from 1 to 16, got {shingle!r}")

    raw_slice = doc.get("slice", "label")
    if raw_slice == "label":
        rule = SliceRule("label")
    elif isinstance(raw_slice, str) and raw_slice.startswith("meta.") and len(raw_slice) > 5:
        rule = SliceRule("meta", raw_slice[5:])
    else:
        raise TaskConfigError(file, "slice", f'must be "label" or "meta.<field>", got {raw_slice!r}')
    if rule.source == "label" and schema is not None:
        raise TaskConfigError(file, "slice", 'an extraction task has no single label: use "meta.<field>"')

    sections = {}
    for sec in SECTIONS:
        if sec in doc:
            if not isinstance(doc[sec], dict):
                raise TaskConfigError(file, sec, f"must be a table: [{sec}]")
            sections[sec] = dict(doc[sec])
    return TaskConfig(name=name, labels=labels, output_schema=schema, min_confidence=min_conf,
                      near_duplicate_threshold=near, shingle_size=shingle, slice_rule=rule,
                      sections=sections, source=str(file))


def load_task_file(path: Path) -> TaskConfig:
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise TaskConfigError(path, "-", f"is not valid TOML: {exc}") from None
    return parse_task(doc, path)


def load_tasks(folder: Path) -> dict[str, TaskConfig]:
    """Every ``*.toml`` under folder, by task name. Fails on the first bad file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise TaskConfigError(folder, "-", "task folder not found: create it with one <task>.toml per "
                                           "task, or pass --tasks DIR")
    tasks: dict[str, TaskConfig] = {}
    for path in sorted(folder.glob("*.toml")):
        task = load_task_file(path)
        if task.name in tasks:
            raise TaskConfigError(path, "name", f"task {task.name!r} is already declared in "
                                                f"{tasks[task.name].source}; names must be unique")
        tasks[task.name] = task
    if not tasks:
        raise TaskConfigError(folder, "-", "no *.toml task files found; add one (see tasks/ in the README)")
    return tasks


def label_of(output: str | dict) -> str:
    """The label string stored for an output: itself, or canonical JSON of an object."""
    return output if isinstance(output, str) else orjson.dumps(output, option=orjson.OPT_SORT_KEYS).decode()


_output_validators: dict[int, object] = {}


def output_problem(output: Any, task: TaskConfig) -> str | None:
    """None when ``output`` is valid for the task (one of its labels, or an object passing
    its output_schema), else why not."""
    if task.labels is not None:
        if not isinstance(output, str):
            return f"output must be one of the task's labels (a string), got {type(output).__name__}"
        if output not in task.labels:
            return f"output {output!r} is not a label of task {task.name!r}"
        return None
    if not isinstance(output, dict):
        return "output must be a JSON object for an extraction task"
    validate = _output_validators.get(id(task))
    if validate is None:
        validate = _output_validators[id(task)] = fastjsonschema.compile(task.output_schema)
    try:
        validate(output)
    except fastjsonschema.JsonSchemaValueException as exc:
        return f"output fails the task's output_schema: {exc.message}"
    return None
