"""The lifecycle of a model version, and the only place its transitions are decided.

    registered ──gate──▶ approved ──canary start──▶ canary ──judge/promote──▶ serving
        │                   │  ▲                       │                        │
        │                   ▼  │ (re-gated)            ▼ (aborted)              ├─▶ retired (replaced)
        └──gate──▶ rejected ◀──┘                    rejected                   └─▶ rolled_back
    registered ──run died──▶ abandoned                 retired / rolled_back ──▶ serving (rollback / re-promote)

``check_transition`` is pure; ``training.registry.store.transition`` applies it to the
registry and is what every command and stage calls.
"""

from __future__ import annotations

from enum import StrEnum


class ModelState(StrEnum):
    REGISTERED = "registered"    # trained, artifacts sealed, not gated yet
    APPROVED = "approved"        # the gate said yes
    REJECTED = "rejected"        # the gate (or a canary judge) said no
    CANARY = "canary"            # shadowing live traffic beside the serving version
    SERVING = "serving"          # answers the task's requests
    RETIRED = "retired"          # served once, replaced by a newer version (still loadable)
    ROLLED_BACK = "rolled_back"  # served once, taken off by a rollback
    ABANDONED = "abandoned"      # its training run died before it was gated


# Statuses written by earlier versions of flywheel, read as today's states.
LEGACY = {"candidate": ModelState.REGISTERED, "promoted": ModelState.SERVING}

S = ModelState
ALLOWED: dict[ModelState, frozenset[ModelState]] = {
    S.REGISTERED: frozenset({S.APPROVED, S.REJECTED, S.ABANDONED}),
    S.APPROVED: frozenset({S.APPROVED, S.REJECTED, S.CANARY, S.SERVING, S.RETIRED}),
    S.REJECTED: frozenset({S.REJECTED, S.APPROVED}),  # re-gated on another gold version
    S.CANARY: frozenset({S.SERVING, S.APPROVED, S.REJECTED}),
    S.SERVING: frozenset({S.RETIRED, S.ROLLED_BACK}),
    S.RETIRED: frozenset({S.SERVING, S.CANARY}),
    S.ROLLED_BACK: frozenset({S.SERVING, S.CANARY}),
    S.ABANDONED: frozenset(),
}
# Once a version has served, a new gate verdict changes its scores, never its stage.
DEPLOYED = frozenset({S.CANARY, S.SERVING, S.RETIRED, S.ROLLED_BACK})


class TransitionError(ValueError):
    """A lifecycle step that is not allowed; the message says what is."""


def state_of(status: str | None) -> ModelState:
    if status is None:
        return ModelState.REGISTERED
    if status in LEGACY:
        return LEGACY[status]
    try:
        return ModelState(status)
    except ValueError:
        raise TransitionError(f"unknown model status {status!r}; known: "
                              f"{', '.join(s.value for s in ModelState)}") from None


def check_transition(current: str | ModelState | None, to: str | ModelState, version: str = "") -> ModelState:
    """The state to write for ``current`` → ``to``, or TransitionError naming what is allowed."""
    cur, target = state_of(current), state_of(to)
    if target not in ALLOWED[cur]:
        allowed = ", ".join(sorted(s.value for s in ALLOWED[cur])) or "nothing (final)"
        what = f"version {version} " if version else ""
        hint = ""
        if target is S.SERVING and cur in (S.REGISTERED, S.REJECTED):
            hint = "; only a gate-approved version can be promoted (see `flywheel gate`)"
        raise TransitionError(f"{what}is {cur.value}: it cannot become {target.value} "
                              f"(from {cur.value} it can become: {allowed}){hint}")
    return target


def after_gate(current: str | None, approved: bool) -> ModelState:
    """The state after a gate verdict: approved/rejected, except that a version that has been
    deployed keeps its stage (re-gating a serving version records scores, not a demotion)."""
    cur = state_of(current)
    if cur in DEPLOYED:
        return cur
    return check_transition(cur, S.APPROVED if approved else S.REJECTED)
