"""Promotion and rollback, decided as pure functions of the registry rows and the current route.

Promotion is a config change: a new model.config record for the task (serving = the promoted
version, previous = the version it replaces, kept loaded), plus lifecycle steps for the
versions involved (checked by kernel.lifecycle, the one place transitions are decided).
Rollback makes the previous version serve again; the version it replaces is rolled_back.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping

from kernel.lifecycle import ModelState, TransitionError, check_transition, state_of
from serving.config import Route, VersionRef
from serving.engine import KINDS

# the student kinds the model server loads: every kind the trainer registers
SERVABLE = KINDS


class PromotionError(ValueError):
    """A promotion or rollback that is not allowed; the message names the fix."""


@dataclass(frozen=True)
class Decision:
    action: str                                   # promote | rollback
    version: str                                  # the version that serves after the decision
    route: Route                                  # the new model.config record
    transitions: tuple[tuple[str, ModelState], ...]  # (version, state to write), in order
    event_kind: str                               # model.events kind: promoted | rolled_back


def version_ref(row: Mapping[str, Any], chat: Mapping[str, Any] | None = None) -> VersionRef:
    """What a router needs to load and call a registered version (chat: its chat.json)."""
    chat = chat or {}
    return VersionRef(row["version"], row["adapter_uri"], row["student"], row.get("base_model") or "",
                      chat.get("system_prompt"), chat.get("max_new_tokens"))


def _step(row: Mapping[str, Any], to: ModelState) -> ModelState:
    try:
        return check_transition(row.get("status"), to, row["version"])
    except TransitionError as exc:
        raise PromotionError(str(exc)) from None


def decide_promote(task: str, row: Mapping[str, Any] | None, gate_approved: bool | None, current: Route | None,
                   ref: VersionRef, *, version: str, decided_by: str, reason: str, decided_at: str,
                   current_rows: Mapping[str, Mapping[str, Any]] | None = None) -> Decision:
    """Make ``version`` serve ``task``. ``gate_approved``: the latest gate verdict of the version
    (None: never gated). ``current_rows``: registry rows of the versions the current route names."""
    if row is None:
        raise PromotionError(f"no model version {version!r} for task {task!r}; see `flywheel models --task {task}`")
    if row["task"] != task:
        raise PromotionError(f"version {version!r} belongs to task {row['task']!r}, not {task!r}")
    if current is not None and current.serving == version:
        raise PromotionError(f"{version} already serves {task!r} (revision {current.revision}); nothing to do")
    if row.get("student") and row["student"] not in SERVABLE:
        raise PromotionError(f"{version} is a {row['student']} student, which `flywheel serve` cannot load "
                             f"(it serves {', '.join(SERVABLE)}); train one of those ([train] student)")
    if gate_approved is None:
        raise PromotionError(f"{version} has no gate verdict: only a gate-approved version can be promoted; "
                             f"run `flywheel gate --task {task} --model {version}`")
    if not gate_approved:
        raise PromotionError(f"{version} was rejected by the gate: only a gate-approved version can be promoted "
                             f"(see `flywheel gate --task {task} --model {version}` for the reasons)")
    steps = [(version, _step(row, ModelState.SERVING))]
    versions = {version: ref}
    previous = None
    if current is not None and current.serving:
        previous = current.serving
        old = (current_rows or {}).get(previous)
        if old is not None and state_of(old.get("status")) is ModelState.SERVING:
            steps.append((previous, _step(old, ModelState.RETIRED)))
        versions[previous] = current.versions[previous]
    canary = share = None
    if current is not None and current.canary and current.canary not in (version, previous):
        canary, share = current.canary, current.canary_share
        versions[canary] = current.versions[canary]
    route = Route(task=task, revision=(current.revision if current else 0) + 1, serving=version,
                  previous=previous, canary=canary, canary_share=share or 0.0, versions=versions,
                  action="promote", decided_by=decided_by, reason=reason, decided_at=decided_at)
    return Decision("promote", version, route, tuple(steps), "promoted")


def decide_rollback(task: str, current: Route | None, rows: Mapping[str, Mapping[str, Any]], *,
                    decided_by: str, reason: str, decided_at: str) -> Decision:
    """Make the previous version serve again; the one serving now becomes rolled_back."""
    if current is None or not current.serving:
        raise PromotionError(f"task {task!r} has no serving version to roll back; promote one first "
                             f"(`flywheel promote --task {task} --model VERSION`)")
    if not current.previous:
        raise PromotionError(f"nothing to roll back to: {current.serving} serves {task!r} and no previous "
                             f"version is recorded (revision {current.revision}); promote a version instead")
    prev, now = current.previous, current.serving
    prev_row, now_row = rows.get(prev), rows.get(now)
    if prev_row is None:
        raise PromotionError(f"the previous version {prev} is not in the model registry; promote a version instead")
    steps = [(prev, _step(prev_row, ModelState.SERVING))]
    if now_row is not None:
        steps.insert(0, (now, _step(now_row, ModelState.ROLLED_BACK)))
    versions = {prev: current.versions[prev]}
    canary = current.canary if current.canary not in (None, now, prev) else None
    if canary:
        versions[canary] = current.versions[canary]
    route = replace(current, revision=current.revision + 1, serving=prev, previous=None, canary=canary,
                    canary_share=current.canary_share if canary else 0.0, versions=versions,
                    action="rollback", decided_by=decided_by, reason=reason, decided_at=decided_at)
    return Decision("rollback", prev, route, tuple(steps), "rolled_back")


def decide_canary_start(task: str, row: Mapping[str, Any] | None, gate_approved: bool | None,
                        current: Route | None, ref: VersionRef, share: float, *, version: str, decided_by: str,
                        reason: str, decided_at: str) -> Decision:
    """Put a gate-approved ``version`` in canary beside the serving version: routers load it, the
    canary stage shadows ``share`` (0-1] of the live requests with it."""
    if row is None:
        raise PromotionError(f"no model version {version!r} for task {task!r}; see `flywheel models --task {task}`")
    if current is None or not current.serving:
        raise PromotionError(f"task {task!r} has no serving version to compare a canary with; promote one first "
                             f"(`flywheel promote --task {task} --model VERSION`)")
    if current.serving == version:
        raise PromotionError(f"{version} already serves {task!r}; a canary is a version that does not serve yet")
    if row.get("student") and row["student"] not in SERVABLE:
        raise PromotionError(f"{version} is a {row['student']!r} student, which the model server cannot load "
                             f"(it loads {', '.join(SERVABLE)}); retrain it with one of those kinds")
    if current.canary and current.canary != version:
        raise PromotionError(f"{current.canary} is already in canary for {task!r}; stop it first "
                             f"(`flywheel canary stop --task {task} --model {current.canary}`)")
    if not gate_approved:
        what = "has no gate verdict" if gate_approved is None else "was rejected by the gate"
        raise PromotionError(f"{version} {what}: only a gate-approved version can enter canary "
                             f"(`flywheel gate --task {task} --model {version}`)")
    if not 0 < share <= 1:
        raise PromotionError(f"canary share must be in (0, 1], got {share}")
    steps = [(version, _step(row, ModelState.CANARY))]
    route = replace(current, revision=current.revision + 1, canary=version, canary_share=share,
                    versions={**{v: current.versions[v] for v in current.named() if v != current.canary},
                              version: ref},
                    action="canary_start", decided_by=decided_by, reason=reason, decided_at=decided_at)
    return Decision("canary_start", version, route, tuple(steps), "canary_started")


def decide_canary_stop(task: str, current: Route | None, row: Mapping[str, Any] | None, *, version: str | None,
                       abort: bool, decided_by: str, reason: str, decided_at: str) -> Decision:
    """Take the canary off: back to approved (stop), or rejected (abort: the judge or a person
    found it worse). The serving version is untouched."""
    if current is None or not current.canary:
        raise PromotionError(f"task {task!r} has no version in canary")
    if version and version != current.canary:
        raise PromotionError(f"{version} is not in canary for {task!r}; {current.canary} is")
    cand = current.canary
    steps = []
    if row is not None:
        steps.append((cand, _step(row, ModelState.REJECTED if abort else ModelState.APPROVED)))
    route = replace(current, revision=current.revision + 1, canary=None, canary_share=0.0,
                    versions={v: current.versions[v] for v in current.named() if v != cand},
                    action="canary_stop", decided_by=decided_by, reason=reason, decided_at=decided_at)
    return Decision("canary_abort" if abort else "canary_stop", cand, route, tuple(steps), "canary_stopped")
