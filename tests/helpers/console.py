"""Rows for the console's overview panels: registry versions, model_config routes, canary pairs."""

from __future__ import annotations


def registry(store, task, version, status, seq):
    store.insert("model_registry", [{"task": task, "version": version, "seq": seq, "status": status,
                                     "student": "encoder_classifier", "adapter_uri": f"/models/{version}",
                                     "created_at": "2026-01-02 00:00:00", "updated_at": f"2026-01-02 00:00:0{seq}"}])


def route(store, task, revision, serving, previous=None, canary=None, share=0.0, action="promote"):
    from serving import history
    from serving.config import Route, VersionRef

    named = [v for v in (serving, previous, canary) if v]
    history.append(store, Route(task, revision, serving, previous, canary, share,
                                {v: VersionRef(v, f"/models/{v}", "encoder_classifier") for v in named},
                                action=action, decided_by="me@host", reason="test",
                                decided_at="2026-01-02T00:00:00.000Z"))


def canary_pairs(store, task, candidate, incumbent, slices: dict[str, tuple[int, int]], start_minute: int = 0):
    """``slices``: {slice: (pairs, disagreements)}; spread over a few minutes."""
    rows, n = [], 0
    for slc, (pairs, disagree) in slices.items():
        for i in range(pairs):
            bad = i < disagree
            rows.append({"task": task, "candidate_version": candidate, "request_id": f"r{n}",
                         "incumbent_version": incumbent, "slice": slc, "input": f"x{n}", "incumbent_answer": "food",
                         "candidate_answer": "travel" if bad else "food", "teacher_answer": None,
                         "agree": 0 if bad else 1, "paired": None, "error": "", "incumbent_latency_ms": 1.0,
                         "candidate_latency_ms": 2.0,
                         "ts": f"2026-01-02 00:{start_minute + n % 5:02d}:{n % 60:02d}"})
            n += 1
    store.insert("canary_pairs", rows)
    return rows
