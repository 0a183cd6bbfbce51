"""Review items out and verdicts in as JSON Lines, for teams that label in Argilla or Label Studio.

Export formats:

* ``flat`` (one object per item: ``id``, ``text``, ``kind``, ``slice``, ``confidence``, ``reason``,
  ``answers``, ``suggestion``, ``labels``, ...): Argilla takes it as is
  (``dataset.records.log(rows, mapping={"text": "text"})``).
* ``label-studio``: ``{"data": {...}, "predictions": [...]}`` per item, the suggestion as a
  pre-annotation of a ``<Choices name="label" toName="text">`` control.

Import accepts, per line, either a flat verdict (``id`` or ``item_id``; ``answer`` or ``label``;
``reviewer`` or ``annotator``; optional ``action`` "discard" and ``note``), or a Label Studio
exported task (``data.item_id`` and its ``annotations``: ``result[].value.choices`` or
``.text``, ``completed_by``, ``was_cancelled`` as a discard). Verdict ids are derived from the
content, so importing the same file twice counts once.
"""

from __future__ import annotations

import hashlib
from typing import Any, Iterable, Iterator

import orjson

from kernel.jsonl import read_jsonl
from kernel.tasks import TaskConfig
from kernel.warehouse import Warehouse
from kernel.warehouse import sql_str as q
from schemas.events import SchemaError, validate
from schemas.timefmt import rfc3339


class TransferError(ValueError):
    pass


def export_rows(store: Warehouse, task: TaskConfig, status: str | None) -> Iterator[dict[str, Any]]:
    which = f" AND status = {q(status)}" if status else ""
    for r in store.rows("SELECT item_id, kind, slice, input, answers, confidence, reason, status, answer, "
                        "toString(arrived_at) AS arrived_at, reviewers, agreement FROM review_items FINAL "
                        f"WHERE task = {q(task.name)}{which} ORDER BY arrived_at, item_id"):
        answers = orjson.loads(r["answers"] or "{}")
        suggestion = answers.get("teacher", answers.get("incumbent"))
        yield {"id": r["item_id"], "task": task.name, "text": r["input"], "kind": r["kind"], "slice": r["slice"],
               "confidence": r["confidence"], "reason": r["reason"], "answers": answers, "suggestion": suggestion,
               "labels": list(task.labels) if task.labels else None, "status": r["status"],
               "answer": r["answer"], "agreement": r["agreement"], "reviewers": r["reviewers"],
               "arrived_at": r["arrived_at"]}


def to_label_studio(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"data": {"item_id": row["id"], "text": row["text"], "kind": row["kind"],
                                    "slice": row["slice"], "reason": row["reason"],
                                    "answers": orjson.dumps(row["answers"]).decode()}}
    if isinstance(row["suggestion"], str):
        out["predictions"] = [{"model_version": "teacher", "score": row["confidence"],
                               "result": [{"from_name": "label", "to_name": "text", "type": "choices",
                                           "value": {"choices": [row["suggestion"]]}}]}]
    return out


def _verdict(task: str, item_id: Any, reviewer: Any, action: str, answer: Any, note: str, where: str) -> dict:
    if not isinstance(item_id, str) or not item_id:
        raise TransferError(f"{where}: no item id (give \"id\" or \"item_id\", as exported)")
    if not isinstance(reviewer, str) or not reviewer.strip():
        raise TransferError(f"{where}: no reviewer (give \"reviewer\" or \"annotator\", or --reviewer NAME)")
    if action == "submit" and answer is None:
        raise TransferError(f"{where}: no answer (give \"answer\" or \"label\", or \"action\": \"discard\")")
    answer_key = orjson.dumps(answer, option=orjson.OPT_SORT_KEYS).decode()
    vid = "import:" + hashlib.sha256(f"{task}|{item_id}|{reviewer}|{action}|{answer_key}".encode()).hexdigest()[:24]
    obj = {"verdict_id": vid, "item_id": item_id, "task": task, "reviewer": reviewer.strip(), "action": action,
           "decided_at": rfc3339(), "schema_version": 1}
    if action == "submit":
        obj["answer"] = answer
    if note:
        obj["note"] = str(note)
    try:
        validate("review.verdicts.schema.json", obj)
    except SchemaError as exc:
        raise TransferError(f"{where}: {exc}") from None
    return obj


def parse_verdict_lines(lines: Iterable[bytes], task: TaskConfig, reviewer: str | None,
                        source: str = "<input>") -> list[dict]:
    """Verdict messages from JSON Lines (flat or Label Studio). Raises TransferError naming the
    first bad line; nothing is returned partially."""
    out = []
    for n, obj in read_jsonl(lines, source, error=TransferError):
        where = f"{source}:{n}"
        if isinstance(obj.get("data"), dict) and "annotations" in obj:  # Label Studio task export
            item_id = obj["data"].get("item_id")
            for a in obj["annotations"] or []:
                who = a.get("completed_by")
                who = who.get("email") if isinstance(who, dict) else (str(who) if who is not None else reviewer)
                if a.get("was_cancelled"):
                    out.append(_verdict(task.name, item_id, who, "discard", None, "", where))
                    continue
                answer = None
                for res in a.get("result") or []:
                    value = res.get("value") or {}
                    picked = value.get("choices") or value.get("text")
                    if picked:
                        answer = picked[0]
                        break
                out.append(_verdict(task.name, item_id, who, "submit" if answer is not None else "discard",
                                    answer, "", where))
            continue
        action = obj.get("action", "submit")
        if action not in ("submit", "discard"):
            raise TransferError(f"{where}: action must be \"submit\" or \"discard\", got {action!r}")
        answer = obj.get("answer", obj.get("label"))
        if isinstance(answer, list) and len(answer) == 1:  # Argilla exports a label question as a list
            answer = answer[0]
        out.append(_verdict(task.name, obj.get("item_id", obj.get("id")), obj.get("reviewer", obj.get("annotator",
                            reviewer)), action, answer if action == "submit" else None, obj.get("note", ""), where))
    return out
