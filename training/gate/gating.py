"""The gate's I/O around the pure decision: gold set, pinned baseline, records, model.events."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import orjson

from kernel.gold import current_version, load_gold
from kernel.jsonl import read_jsonl
from kernel.lifecycle import after_gate
from kernel.tasks import TaskConfig
from kernel.warehouse import Warehouse
from schemas.events import SCHEMA_VERSION, validate
from schemas.timefmt import rfc3339
from training.gate import store as gstore
from training.gate.config import GateConfig
from training.gate.policy import Scores, Verdict, decide, score_answers, teacher_answers
from training.registry import store as st

log = logging.getLogger(__name__)

PredictorFactory = Callable[[dict], Callable[[list[str]], list[str]]]


class GateError(RuntimeError):
    pass


def gold_for(store: Warehouse, task: str, version: int | None) -> tuple[int, list[dict]]:
    if version in (None, 0):
        version = current_version(store, task)
    if version == 0:
        raise GateError(f"task {task!r} has no gold set: import one with `flywheel gold import --task {task} FILE`")
    v, rows = load_gold(store, task, version)
    if not rows:
        raise GateError(f"gold set version {version} of task {task!r} does not exist (current is "
                        f"{current_version(store, task)})")
    return v, rows


def baseline(store: Warehouse, task: TaskConfig, cfg: GateConfig, gold_version: int, gold_rows: list[dict],
             predictor_factory: PredictorFactory | None,
             model_version: str | None = None) -> tuple[str, Scores, str] | None:
    """The pinned baseline of this gold version; scored and pinned now if it has none yet.

    ``baseline = "teacher"``: the teacher_output on the gold rows, else (no row carries one)
    the incumbent. ``baseline = "incumbent"``: the incumbent only (the latest promoted, else
    approved version other than ``model_version``). A baseline is pinned per gold version and
    name ("teacher", "incumbent:<version>"): reused as long as the incumbent stays the same,
    scored afresh once another version becomes the incumbent. None when there is no baseline.
    """
    order = ["teacher", "incumbent"] if cfg.baseline == "teacher" else ["incumbent"]
    for kind in order:
        if kind == "teacher":
            answers, missing = teacher_answers(gold_rows)
            if not answers:
                continue
            pinned = gstore.pinned_baseline(store, task.name, gold_version, "teacher")
            if pinned is not None:
                return pinned
            note = f"teacher_output missing on {missing} gold rows (counted as wrong)" if missing else ""
            scores = score_answers(gold_rows, answers, task.is_extraction)
            return gstore.pin_baseline(store, task.name, gold_version, "teacher", scores, note)
        inc = st.incumbent(store, task.name, exclude=model_version)
        if inc is None:
            continue
        name = f"incumbent:{inc['version']}"
        pinned = gstore.pinned_baseline(store, task.name, gold_version, name)
        if pinned is not None:
            return pinned
        if predictor_factory is None:
            continue
        log.info("scoring incumbent %s on gold v%d to pin the baseline", inc["version"], gold_version)
        predict = predictor_factory(inc)
        preds = predict([r["input"] for r in gold_rows])
        scores = score_answers(gold_rows, {r["id"]: p for r, p in zip(gold_rows, preds)}, task.is_extraction)
        return gstore.pin_baseline(store, task.name, gold_version, name, scores)
    return None


def no_baseline_reason(task: TaskConfig, cfg: GateConfig, gold_version: int) -> str:
    if cfg.baseline == "incumbent":
        return (f"no incumbent to gate against: task {task.name!r} has [gate] baseline = \"incumbent\" but no "
                "promoted or approved model version. Promote or approve a version first, or set [gate] "
                f"baseline = \"teacher\" in {task.source} (gold rows with teacher_output) to gate the first one")
    return (f"no baseline for task {task.name!r} on gold v{gold_version}: the gold rows carry no teacher_output "
            "and no model version is promoted or approved. Re-import the gold set with teacher_output "
            f"(`flywheel gold import --task {task.name} FILE`), or promote/approve a version to gate against")


def gate(store: Warehouse, task: TaskConfig, cfg: GateConfig, model_version: str, answers: dict[str, Any],
         gold_version: int, gold_rows: list[dict], predictor_factory: PredictorFactory | None = None,
         registered: bool = False) -> Verdict:
    """Score, decide, record (eval_results, gate_verdicts, registry status). Returns the verdict.
    Without a baseline the candidate is rejected, the reason naming the fix (nothing is pinned)."""
    picked = baseline(store, task, cfg, gold_version, gold_rows, predictor_factory, model_version)
    cand = score_answers(gold_rows, answers, task.is_extraction)
    if picked is None:
        verdict = decide(task.name, model_version, gold_version, cand, Scores(0.0, 0, {}), "none", cfg)
        verdict = replace(verdict, approved=False,
                          reasons=(no_baseline_reason(task, cfg, gold_version),) + verdict.reasons)
        note = ""
    else:
        name, base_scores, note = picked
        verdict = decide(task.name, model_version, gold_version, cand, base_scores, name, cfg)
    if note:
        verdict = replace(verdict, warnings=verdict.warnings + (f"baseline: {note}",))
    missing = sum(1 for r in gold_rows if r["id"] not in answers)
    if missing:
        verdict = replace(verdict, warnings=verdict.warnings + (
            f"{missing} gold examples have no answer (counted as wrong)",))
    gstore.record_verdict(store, verdict)
    if registered:
        row = st.get_model(store, task.name, model_version) or {}
        evals = orjson.loads(row.get("eval_results") or "{}")
        evals["verdict"] = verdict.to_dict()
        st.transition(store, task.name, model_version, after_gate(row.get("status"), verdict.approved),
                            gold_version=gold_version, overall_score=verdict.overall,
                            baseline_score=verdict.baseline_overall, eval_results=st.dumps(evals))
    return verdict


def read_predictions(path: Path, gold_rows: list[dict]) -> tuple[dict[str, Any], str]:
    """Answers from a JSONL file of {"id", "output"} lines for gold ids, and a name for them."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise GateError(f"{path}: cannot read ({exc.strerror})") from None
    gold_ids = {r["id"] for r in gold_rows}
    answers: dict[str, Any] = {}
    unknown = []
    shape = '{"id": "<gold id>", "output": ...}'
    for n, obj in read_jsonl(raw.splitlines(), str(path), shape=shape, error=GateError):
        if "id" not in obj or "output" not in obj:
            raise GateError(f"{path}:{n}: each line must be {shape}")
        if obj["id"] in answers:
            raise GateError(f"{path}:{n}: id {obj['id']!r} answered twice")
        if obj["id"] not in gold_ids:
            unknown.append(obj["id"])
        answers[obj["id"]] = obj["output"]
    if unknown:
        raise GateError(f"{path}: {len(unknown)} ids are not in this gold version (e.g. {unknown[:3]}); "
                        "answer the gold ids of the version being gated (see `--gold-version`)")
    if not answers:
        raise GateError(f"{path}: no predictions")
    digest = hashlib.sha256(raw).hexdigest()[:12]
    return answers, f"predictions:{path.name}:{digest}"


def event_for(verdict: Verdict, request_id: str | None = None) -> dict[str, Any]:
    kind = "candidate_approved" if verdict.approved else "candidate_rejected"
    eid = hashlib.sha256(f"{kind}|{verdict.task}|{verdict.model_version}|{verdict.gold_version}".encode()).hexdigest()[:32]
    ev = {
        "event_id": eid, "kind": kind, "task": verdict.task, "model_version": verdict.model_version,
        "gold_version": verdict.gold_version, "request_id": request_id,
        "ts": rfc3339(),
        "verdict": {"approved": verdict.approved, "overall": verdict.overall,
                    "baseline_overall": verdict.baseline_overall, "baseline": verdict.baseline,
                    "reasons": list(verdict.reasons), "warnings": list(verdict.warnings),
                    "slices": [{"slice": s.slice, "n": s.n, "score": s.score, "baseline": s.baseline,
                                "status": s.status} for s in verdict.slices],
                    "sources": [{"source": s.source, "n": s.n, "score": s.score, "baseline": s.baseline}
                                for s in verdict.sources]},
        "schema_version": SCHEMA_VERSION,
    }
    validate("model.events.schema.json", ev)
    return ev


async def publish(kafka, topic: str, items: list[tuple[str, dict]]) -> None:
    from aiokafka import AIOKafkaProducer

    from kernel.broker import start_client

    producer = AIOKafkaProducer(**kafka.aiokafka_kwargs(), acks="all")
    await start_client(producer, kafka.servers)
    try:
        for key, value in items:
            await producer.send_and_wait(topic, orjson.dumps(value), key=key.encode())
    finally:
        await producer.stop()


def publish_sync(kafka, topic: str, items: list[tuple[str, dict]]) -> None:
    import asyncio

    asyncio.run(publish(kafka, topic, items))
