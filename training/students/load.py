"""Load a registered student for inference: the one path the gate and the server use."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable


def load_predictor(row: dict) -> Callable[[list[str]], list[str]]:
    """A predict(texts) -> outputs function for a model_registry row."""
    hp = json.loads(row.get("hyperparameters") or "{}")
    adapter = Path(row["adapter_uri"])
    if not adapter.is_dir():
        raise FileNotFoundError(f"adapter of {row['version']} not found at {adapter}: the artifacts "
                                "folder moved? set FLYWHEEL_ARTIFACTS_DIR to where it lives")
    if row["student"] in ("encoder_classifier", "encoder_full"):
        from training.students.encoder import EncoderPredictor

        return EncoderPredictor(adapter, row["base_model"], hp.get("max_length", 128)).predict
    if row["student"] == "embedding_head":
        from training.students.head import HeadPredictor

        return HeadPredictor(adapter, row["base_model"]).predict
    from training.students.causal_lm import CausalPredictor

    return CausalPredictor(adapter, row["base_model"], hp.get("quantization", "auto")).predict
