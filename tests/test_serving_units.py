"""Pure decisions of serving and promotion: applying model.config records, eviction, and the
promotion / rollback rules (lifecycle through kernel.lifecycle)."""

import orjson
import pytest

from schemas.events import validate
from serving.config import ConfigError, Route, VersionRef, apply, decode_record, encode, evictable, latest_per_task
from serving.run import parse_backends
from streams.promote.policy import PromotionError, decide_promote, decide_rollback

T = "transactions"


def ref(v: str) -> VersionRef:
    return VersionRef(v, f"/artifacts/{T}/{v}/adapter", "encoder_classifier", "/models/minilm")


def route(rev: int, serving: str | None, previous: str | None = None, canary: str | None = None) -> Route:
    named = [v for v in (serving, previous, canary) if v]
    return Route(T, rev, serving, previous, canary, 0.1 if canary else 0.0, {v: ref(v) for v in named},
                 action="promote", decided_by="me@host", reason="r", decided_at="2026-11-21T10:00:00.000Z")


# ------------------------------------------------------------------ model.config records

def test_record_round_trips_through_the_schema():
    r = route(3, "v3", "v2", "v4")
    raw = encode(r)
    obj = orjson.loads(raw)
    validate("model.config.schema.json", obj)
    assert obj["config_id"] == f"{T}:3" and set(obj["versions"]) == {"v2", "v3", "v4"}
    assert decode_record(raw) == r


def test_invalid_records_are_refused_with_the_reason():
    with pytest.raises(ConfigError, match="not JSON"):
        decode_record(b"{nope")
    obj = orjson.loads(encode(route(1, "v1")))
    del obj["revision"]
    with pytest.raises(ConfigError, match="revision"):
        decode_record(orjson.dumps(obj))
    obj = orjson.loads(encode(route(2, "v2", "v1")))
    del obj["versions"]["v1"]
    with pytest.raises(ConfigError, match="without describing"):
        decode_record(orjson.dumps(obj))


def test_apply_keeps_the_highest_revision_per_task():
    routes, changed = apply({}, route(1, "v1"))
    assert changed and routes[T].serving == "v1"
    routes, changed = apply(routes, route(2, "v2", "v1"))
    assert changed and routes[T].serving == "v2"
    same, changed = apply(routes, route(1, "v1"))          # a replay of an older record
    assert not changed and same[T].serving == "v2"
    same, changed = apply(routes, route(2, "v2", "v1"))    # the same record twice
    assert not changed
    other = Route("other", 1, "o1", versions={"o1": ref("o1")})
    both, changed = apply(routes, other)
    assert changed and set(both) == {T, "other"} and both[T] is routes[T]


def test_reading_the_uncompacted_topic_from_the_beginning_gives_the_last_state():
    log = [route(1, "v1"), route(2, "v2", "v1"), route(3, "v1"), route(2, "v2", "v1")]
    assert latest_per_task(log)[T].revision == 3 and latest_per_task(log)[T].serving == "v1"


def test_evictable_never_unloads_what_a_route_names_oldest_first():
    routes = {T: route(5, "v5", "v4", "v6")}
    loaded = ["v1", "v2", "v4", "v3", "v5", "v6"]
    assert evictable(loaded, routes, cap=4) == ["v1", "v2"]
    assert evictable(loaded, routes, cap=6) == []
    assert evictable(loaded, routes, cap=1) == ["v1", "v2", "v3"]   # named ones stay even over the cap


def test_parse_backends():
    assert parse_backends(["http://vllm:8000"]) == {k: "http://vllm:8000" for k in
                                                    ("encoder_classifier", "encoder_full", "embedding_head",
                                                     "causal_lm")}
    assert parse_backends(["encoder_full=http://cpu:8001"]) == {"encoder_full": "http://cpu:8001"}
    assert parse_backends(["causal_lm=http://vllm:8000"]) == {"causal_lm": "http://vllm:8000"}
    with pytest.raises(ValueError, match="kind must be"):
        parse_backends(["gpt=http://x"])
    with pytest.raises(ValueError, match="http"):
        parse_backends(["vllm:8000"])


# ------------------------------------------------------------------ promotion rules

def row(v: str, status: str, task: str = T) -> dict:
    return {"task": task, "version": v, "status": status, "adapter_uri": f"/a/{v}", "student": "encoder_classifier",
            "base_model": "/models/minilm"}


def promote(v, status, approved, current=None, rows=None):
    return decide_promote(T, row(v, status), approved, current, ref(v), version=v, decided_by="me", reason="",
                          decided_at="2026-11-21T10:00:00.000Z", current_rows=rows or {})


def test_first_promotion_of_an_approved_version():
    d = promote("v1", "approved", True)
    assert d.route.serving == "v1" and d.route.previous is None and d.route.revision == 1
    assert d.transitions == (("v1", "serving"),) and d.event_kind == "promoted"


def test_promotion_keeps_the_replaced_version_as_previous_and_retires_it():
    cur = route(4, "v1")
    d = promote("v2", "approved", True, cur, {"v1": row("v1", "serving")})
    assert (d.route.serving, d.route.previous, d.route.revision) == ("v2", "v1", 5)
    assert set(d.route.versions) == {"v1", "v2"}
    assert d.transitions == (("v2", "serving"), ("v1", "retired"))


def test_a_legacy_promoted_status_counts_as_serving():
    d = promote("v2", "approved", True, route(1, "v1"), {"v1": row("v1", "promoted")})
    assert ("v1", "retired") in d.transitions


@pytest.mark.parametrize("status,approved,match", [
    ("rejected", False, "rejected by the gate"),
    ("registered", None, "no gate verdict"),
    ("approved", False, "rejected by the gate"),        # re-gated on a newer gold set and rejected
    ("abandoned", True, "abandoned"),
    ("rejected", True, "only a gate-approved version"),  # status says rejected: the lifecycle refuses
])
def test_only_gate_approved_versions_can_be_promoted(status, approved, match):
    with pytest.raises(PromotionError, match=match):
        promote("v9", status, approved, route(1, "v1"), {"v1": row("v1", "serving")})


def test_promotion_refuses_unknown_other_task_and_already_serving():
    with pytest.raises(PromotionError, match="no model version"):
        decide_promote(T, None, None, None, None, version="vx", decided_by="me", reason="", decided_at="")
    with pytest.raises(PromotionError, match="belongs to task"):
        decide_promote(T, row("o1", "approved", task="other"), True, None, ref("o1"), version="o1",
                       decided_by="me", reason="", decided_at="")
    with pytest.raises(PromotionError, match="already serves"):
        promote("v1", "serving", True, route(2, "v1"))


def test_rollback_returns_to_the_previous_version():
    cur = route(7, "v2", "v1")
    d = decide_rollback(T, cur, {"v1": row("v1", "retired"), "v2": row("v2", "serving")}, decided_by="me",
                        reason="bad answers", decided_at="2026-11-21T10:00:00.000Z")
    assert (d.route.serving, d.route.previous, d.route.revision, d.route.action) == ("v1", None, 8, "rollback")
    assert d.transitions == (("v2", "rolled_back"), ("v1", "serving")) and d.event_kind == "rolled_back"
    assert set(d.route.versions) == {"v1"} and d.version == "v1"


def test_rollback_needs_a_serving_and_a_previous_version():
    with pytest.raises(PromotionError, match="no serving version"):
        decide_rollback(T, None, {}, decided_by="me", reason="", decided_at="")
    with pytest.raises(PromotionError, match="nothing to roll back to"):
        decide_rollback(T, route(3, "v1"), {"v1": row("v1", "serving")}, decided_by="me", reason="", decided_at="")


def test_a_rolled_back_version_may_be_promoted_again_and_a_canary_is_kept():
    cur = route(8, "v1", canary="v3")
    d = promote("v2", "rolled_back", True, cur, {"v1": row("v1", "serving"), "v3": row("v3", "canary")})
    assert (d.route.serving, d.route.previous, d.route.canary) == ("v2", "v1", "v3")
    assert d.route.canary_share == 0.1 and set(d.route.versions) == {"v1", "v2", "v3"}
    # promoting the canary itself clears it
    d = promote("v3", "canary", True, cur, {"v1": row("v1", "serving"), "v3": row("v3", "canary")})
    assert d.route.canary is None and d.route.canary_share == 0.0


def test_every_student_kind_the_trainer_registers_is_promotable_an_unknown_one_is_refused():
    from streams.promote.policy import PromotionError, decide_promote
    from training.students.config import KINDS as TRAINED

    for kind in TRAINED:                      # the trainer's kinds, each loadable by the server
        row = {"task": "tx", "version": "tx-v3-abc", "student": kind, "status": "approved"}
        d = decide_promote("tx", row, True, None, VersionRef("tx-v3-abc", "/a", kind), version="tx-v3-abc",
                           decided_by="t", reason="r", decided_at="2026-01-01T00:00:00Z")
        assert d.route.serving == "tx-v3-abc" and d.route.versions["tx-v3-abc"].student == kind
    row = {"task": "tx", "version": "tx-v3-abc", "student": "gpt_head", "status": "approved"}
    with pytest.raises(PromotionError, match=r"gpt_head student.*cannot load.*encoder_full"):
        decide_promote("tx", row, True, None, None, version="tx-v3-abc", decided_by="t", reason="r",
                       decided_at="2026-01-01T00:00:00Z")


def test_every_servable_kind_can_enter_canary_and_is_asked_the_right_way():
    from serving.engine import KINDS
    from streams.canary.pairs import asks_classify
    from streams.promote.policy import PromotionError, decide_canary_start

    cur = route(1, "tx-v1")
    for kind in KINDS:
        row = {"task": "tx", "version": "tx-v2", "student": kind, "status": "approved"}
        d = decide_canary_start("tx", row, True, cur, VersionRef("tx-v2", "/a", kind), 0.2,
                                version="tx-v2", decided_by="t", reason="r", decided_at="2026-01-01T00:00:00Z")
        assert d.route.canary == "tx-v2"
    assert [k for k in KINDS if not asks_classify(k)] == ["causal_lm"]   # the rest answer /classify
    row = {"task": "tx", "version": "tx-v2", "student": "gpt9", "status": "approved"}
    with pytest.raises(PromotionError, match=r"'gpt9' student.*cannot load"):
        decide_canary_start("tx", row, True, cur, VersionRef("tx-v2", "/a", "gpt9"), 0.2,
                            version="tx-v2", decided_by="t", reason="r", decided_at="2026-01-01T00:00:00Z")
