"""Training recipe and student choice: schedule, steps, class weights, tie-breaks, the learning
check ("did not learn"), the embedding-head student, and choosing between kinds on validation.
The model tests use the packaged MiniLM on a few dozen sentences and a handful of steps."""

import json
import math

import pytest
import torch

from kernel.tasks import TaskConfigError, parse_task
from training.students.config import TrainConfig, packaged_minilm, train_config
from training.students.encoder import class_weights
from training.students.learning import DID_NOT_LEARN, LEARNED, check_learning
from training.students.loop import better, fit, length_grouped_batches, lr_factor, shuffled_batches, steps_for

BASE = {"name": "tx", "labels": ["a", "b"]}


def task(**sections):
    return parse_task({**BASE, **sections}, "tx.toml")


# --- config -------------------------------------------------------------------------------

def test_defaults_compare_kinds_with_a_step_budget():
    c = train_config(task())
    assert c.student == "auto" and c.kinds() == ("embedding_head", "encoder_classifier", "encoder_full")
    assert (c.steps, c.min_steps, c.max_steps, c.lr_schedule, c.class_weights) == (0, 150, 600, "cosine", "balanced")
    assert c.learning_rate == 2e-3 and c.search_trials == 0
    one = train_config(task(train={"student": "encoder_full", "steps": 40}))
    assert one.kinds() == ("encoder_full",) and one.steps == 40


@pytest.mark.parametrize("raw,key", [
    ({"candidates": ["svm"]}, "train.candidates"),
    ({"candidates": []}, "train.candidates"),
    ({"candidates": ["embedding_head", "embedding_head"]}, "train.candidates"),
    ({"candidates": ["embedding_head", "causal_lm"]}, "train.causal_base_model"),
    ({"min_steps": 100, "max_steps": 50}, "train.max_steps"),
    ({"lr_schedule": "step"}, "train.lr_schedule"),
    ({"class_weights": "inverse"}, "train.class_weights"),
    ({"search_budget_s": 0}, "train.search_budget_s"),
    ({"precision": "fp16"}, "train.precision"),
])
def test_bad_train_values_name_the_key(raw, key):
    with pytest.raises(TaskConfigError) as e:
        train_config(task(train=raw))
    assert e.value.key == key


# --- schedule, steps, weights, tie-break ----------------------------------------------------

def test_length_grouped_batches_cover_every_example_once_per_epoch_with_less_padding():
    import random

    rng = random.Random(3)
    lengths = [rng.randint(5, 60) for _ in range(1000)]
    make = length_grouped_batches(lengths, 16, seed=0)
    plain = shuffled_batches(len(lengths), 16, seed=0)

    def padded(batches):        # tokens a step pads to (every batch padded to its longest member)
        return sum(len(b) * max(lengths[i] for i in b) for b in batches)

    e1, e2 = make(1), make(2)
    for e in (e1, e2):
        assert sorted(i for b in e for i in b) == list(range(1000)) and all(1 <= len(b) <= 16 for b in e)
    assert e1 != e2                                             # reshuffled each epoch
    assert length_grouped_batches(lengths, 16, seed=0)(1) == e1  # and seeded
    assert padded(e1) < 0.8 * padded(plain(1))                 # less padding than random batches
    assert len(e1) == len(plain(1))                            # the same number of steps per epoch
    # a batch mixes examples from across the data, not only neighbours in the input order
    assert max(max(b) - min(b) for b in e1) > 500
    # and the batches come in shuffled order, not short pools first (the first step sees a long one
    # as often as a short one)
    longest = [max(lengths[i] for i in b) for b in e1]
    rising = sum(a <= b for a, b in zip(longest, longest[1:])) / (len(longest) - 1)
    assert rising < 0.75, rising            # ~0.5 shuffled; ~0.9 if each pool came out in length order
    assert make(2) == e2 and make(1) == e1  # an epoch's batches depend on the epoch, not on the calls before


def test_length_grouping_is_a_train_key():
    assert train_config(task()).length_grouping is True
    assert train_config(task(train={"length_grouping": False})).length_grouping is False
    with pytest.raises(TaskConfigError) as e:
        train_config(task(train={"length_grouping": "yes"}))
    assert e.value.key == "train.length_grouping"


def test_lr_warms_up_then_decays_to_zero():
    f = [lr_factor(s, 100, 10, "cosine") for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:])) and f[-1] < 0.01
    assert lr_factor(55, 100, 10, "linear") == pytest.approx(0.5)
    assert lr_factor(90, 100, 10, "constant") == 1.0


def test_training_length_is_in_steps_bounded_by_min_and_max():
    assert steps_for(250, 16, 3, 150, 600) == 150          # a small pool still gets 150 updates
    assert steps_for(1000, 16, 3, 150, 600) == 189         # 3 passes
    assert steps_for(50000, 16, 3, 150, 600) == 600        # a large pool is capped
    assert steps_for(50000, 16, 3, 150, 600, steps=42) == 42


def test_class_weights_balance_rare_labels():
    w = class_weights([90, 10, 0], "balanced")
    assert w[1] / w[0] == pytest.approx(9.0) and w[2] == w[1]
    assert (90 * w[0] + 10 * w[1]) / 100 == pytest.approx(1.0)      # mean weight per example is 1
    s = class_weights([90, 10], "sqrt")
    assert s[1] / s[0] == pytest.approx(3.0)
    assert class_weights([5, 5], "none") is None


def test_accuracy_ties_go_to_the_lower_validation_loss():
    assert better(0.8, 0.8, "max", tie=0.5, best_tie=0.6)
    assert not better(0.8, 0.8, "max", tie=0.7, best_tie=0.6)
    assert not better(0.7, 0.8, "max", tie=0.1, best_tie=0.6)
    torch.manual_seed(0)
    model = torch.nn.Linear(1, 1, bias=False)
    losses = iter([0.9, 0.7, 0.5, 0.6])
    res = fit(model, lambda e: [0, 1], lambda b: (model.weight - 3).pow(2).sum(),
              lambda: {"acc": 0.75, "loss": next(losses)}, epochs=1, learning_rate=0.1, weight_decay=0.0,
              warmup_share=0.0, patience=5, metric="acc", mode="max", desc="t", max_steps=8, eval_every=2,
              tie_metric="loss")
    assert res.steps == 8 and res.epochs_run == 4 and res.best_epoch == 3   # flat accuracy, lowest loss


# --- did the student learn? ---------------------------------------------------------------

def test_a_collapsed_student_did_not_learn_with_evidence():
    val = ["a"] * 4 + ["b"] * 3 + ["c"] * 3
    lc = check_learning(val, ["a"] * 10, {"a": 40, "b": 30, "c": 30})
    assert lc.status == DID_NOT_LEARN and not lc.learned
    assert lc.top_prediction == "a" and lc.top_prediction_share == 1.0 and lc.majority_baseline == 0.4
    assert len(lc.reasons) == 2 and "100% of validation answers are 'a'" in lc.summary()
    assert "majority-class baseline 0.400" in lc.summary()


def test_at_the_majority_baseline_without_collapse_is_not_learning():
    val = ["a"] * 6 + ["b"] * 2 + ["c"] * 2
    preds = ["a", "a", "a", "b", "c", "b", "a", "c", "b", "a"]        # 5/10 right, majority gets 6/10
    lc = check_learning(val, preds, {"a": 60, "b": 20, "c": 20})
    assert lc.status == DID_NOT_LEARN and len(lc.reasons) == 1 and "baseline" in lc.reasons[0]


def test_a_student_that_learned_but_is_imperfect():
    val = ["a"] * 4 + ["b"] * 3 + ["c"] * 3
    preds = ["a", "a", "a", "b", "b", "b", "b", "c", "c", "a"]
    lc = check_learning(val, preds, {"a": 40, "b": 30, "c": 30})
    assert lc.status == LEARNED and lc.val_accuracy == 0.8 and lc.summary().startswith("learned")


def test_a_task_with_one_dominant_label_is_not_called_collapsed_for_predicting_it_well():
    val = ["a"] * 95 + ["b"] * 5
    preds = ["a"] * 95 + ["b"] * 4 + ["a"]
    lc = check_learning(val, preds, {"a": 950, "b": 50})
    assert lc.status == LEARNED, lc.reasons


# --- real students on a small real-text task ----------------------------------------------

SENTS = {
    "sport": ["The striker scored twice in the second half", "The champions won the final on penalties",
              "She set a new record in the marathon", "The coach praised his defenders after the match",
              "The team climbed to third in the league table", "He was sent off for a late tackle",
              "The tennis star reached the semi-final", "Fans cheered as the goalkeeper saved the penalty",
              "The cricket test was drawn after rain", "The sprinter won gold in the 100 metres"],
    "finance": ["Shares fell sharply after the profit warning", "The central bank raised interest rates",
                "Quarterly revenue rose by eight percent", "The firm agreed a takeover worth two billion",
                "Investors sold bonds as inflation climbed", "The company cut its dividend this year",
                "Oil prices hit a three-month high", "The bank reported record annual profits",
                "The currency weakened against the dollar", "Retail sales slowed in the last quarter"],
    "weather": ["Heavy rain is expected across the north tonight", "A heatwave will bring temperatures of 35C",
                "Snow closed roads in the mountains", "Strong winds brought down trees overnight",
                "Forecasters warn of thunderstorms tomorrow", "Fog will clear by late morning",
                "The drought has left reservoirs half empty", "Frost is likely in rural areas tonight",
                "A storm is heading for the west coast", "Sunny spells and light showers this afternoon"],
}


def rows():
    out = []
    for lab, ss in SENTS.items():
        out += [{"id": f"{lab}{i}", "input": s, "output": lab} for i, s in enumerate(ss)]
    val = [r for r in out if int(r["id"][-1]) >= 7]
    train = [r for r in out if int(r["id"][-1]) < 7]
    return train, val


def cfg(**kw):
    return TrainConfig(base_model=packaged_minilm(), max_length=32, batch_size=8, **kw)


def test_a_deliberately_collapsed_student_is_reported_as_did_not_learn(tmp_path):
    """The failure the issue saw: a learning rate far too small for the steps given leaves the
    randomly initialised head in charge; the run must say "did not learn", not just "below baseline"."""
    from training.students.select import train_student

    train, val = rows()
    sel = train_student(cfg(student="encoder_classifier", learning_rate=1e-9, steps=2, warmup_share=0.0),
                        list(SENTS), train, val, tmp_path / "adapter")
    assert sel.kind == "encoder_classifier"
    assert sel.learning.status == DID_NOT_LEARN, sel.learning
    assert sel.learning.summary().startswith("did not learn: ")
    d = sel.to_dict()
    assert d["learning"]["status"] == DID_NOT_LEARN and d["candidates"][0]["learning"]["reasons"]


def test_kinds_are_compared_on_validation_and_the_best_is_saved(tmp_path):
    from training.students.load import load_predictor
    from training.students.select import train_student

    train, val = rows()
    c = cfg(candidates=("embedding_head", "encoder_classifier"), steps=3, learning_rate=1e-9)
    sel = train_student(c, list(SENTS), train, val, tmp_path / "adapter")
    kinds = {k.kind: k for k in sel.candidates}
    assert set(kinds) == {"embedding_head", "encoder_classifier"}
    # frozen MiniLM embeddings separate these topics; an untrained LoRA head does not
    assert sel.kind == "embedding_head" and kinds["embedding_head"].val_accuracy >= 0.8
    assert kinds["encoder_classifier"].learning["status"] == DID_NOT_LEARN
    assert sel.learning.status == LEARNED and "embedding_head won" in sel.reason
    assert (tmp_path / "adapter" / "head.safetensors").is_file()
    assert not any(p.name.startswith("candidates-") for p in tmp_path.iterdir())    # work dirs removed
    json.dumps(sel.to_dict())                                                        # lineage is JSON
    row = {"version": "v", "adapter_uri": str(tmp_path / "adapter"), "student": sel.kind,
           "base_model": c.base_model, "hyperparameters": json.dumps(sel.cfg.to_dict())}
    predict = load_predictor(row)
    answers = predict([r["input"] for r in val])
    assert answers == sel.fit.val_predictions                                        # same path as serving
    assert math.isclose(sum(a == r["output"] for a, r in zip(answers, val)) / len(val),
                        kinds["embedding_head"].val_accuracy)


def test_search_runs_trials_within_its_budget_and_records_them(tmp_path):
    from training.students.select import train_student

    train, val = rows()
    c = cfg(student="encoder_classifier", steps=2, learning_rate=1e-9, search_trials=2, search_budget_s=600)
    sel = train_student(c, list(SENTS), train, val, tmp_path / "adapter")
    s = sel.search
    assert s["kind"] == "encoder_classifier" and s["trials_run"] == 2 and len(s["trials"]) == 2
    for t in s["trials"]:
        assert 5e-4 <= t["learning_rate"] <= 1e-2 and 1 <= t["steps"] <= 4 and t["lora_r"] in (4, 8, 16)
    # a trial replaces the default only when it scores better on validation
    best_trial = max(s["trials"], key=lambda t: (t["learning"] != "did not learn", t["val_accuracy"], -t["val_loss"]))
    if s["improved"]:
        assert sel.candidates[-1].source == "search" and sel.fit.steps == best_trial["steps"]
    else:
        assert sel.cfg.learning_rate == 1e-9


def test_search_starts_no_trial_that_would_overrun_its_budget():
    from training.students.search import search_kind
    from training.students.select import Candidate

    def never(*a, **k):
        raise AssertionError("no trial may start")

    base = Candidate("encoder_full", 0.5, 1.0, train_seconds=120.0, steps=150, learning={"status": "learned"},
                     hyperparameters={"learning_rate": 1e-4, "steps": 150, "lora_r": None})
    record, best = search_kind(cfg(search_trials=5, search_budget_s=60), base, ["a"], [], [], None, never, None, None)
    assert best is None and record["trials_run"] == 0 and record["improved"] is False


def test_the_run_message_tells_did_not_learn_from_below_baseline():
    from training.train.worker import run_message

    val = ["a"] * 4 + ["b"] * 3 + ["c"] * 3
    collapsed = check_learning(val, ["a"] * 10, {"a": 40, "b": 30, "c": 30}).summary()
    learned = check_learning(val, ["a", "a", "a", "b", "b", "b", "b", "c", "c", "a"],
                             {"a": 40, "b": 30, "c": 30}).summary()
    below = ["overall score 0.8000 is below the baseline's 0.9000"]
    m1 = run_message(False, below, collapsed)
    m2 = run_message(False, below, learned)
    assert m1.startswith("did not learn: 100% of validation answers are 'a'") and below[0] in m1
    assert m2.startswith("rejected: overall score") and "(learned: validation accuracy 0.800" in m2
    assert "did not learn" not in m2
    assert run_message(True, [], learned).startswith("approved (learned")


def test_full_fine_tuning_saves_the_whole_model_and_serves_it(tmp_path):
    from training.students.load import load_predictor
    from training.students.select import train_student

    train, val = rows()
    c = cfg(student="encoder_full", steps=2)
    sel = train_student(c, list(SENTS), train, val, tmp_path / "adapter")
    assert sel.kind == "encoder_full" and sel.fit.steps == 2
    assert (tmp_path / "adapter" / "config.json").is_file()
    assert not (tmp_path / "adapter" / "adapter_config.json").exists()
    row = {"version": "v", "adapter_uri": str(tmp_path / "adapter"), "student": "encoder_full",
           "base_model": c.base_model, "hyperparameters": json.dumps(sel.cfg.to_dict())}
    assert load_predictor(row)([r["input"] for r in val]) == sel.fit.val_predictions
