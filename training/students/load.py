"""Load a registered student for inference: the one path the gate and the server use.

The gate's predictor is the model server's engine (serving.engine) holding this one adapter:
the same base loading, the same prompt (the trained system prompt + the input), the same
greedy decoding or classification head, so a version scores on the gold set exactly as it
answers when served. Kinds the engine cannot load (encoder_full, embedding_head) are scored
through their own predictors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

# Kinds the model server's engine loads (LoRA adapters on a shared base). encoder_full and
# embedding_head are scored here through their own predictors; `flywheel serve` cannot load them yet.
SERVED_BY_ENGINE = ("encoder_classifier", "causal_lm")


def load_predictor(row: dict) -> Callable[[list[str]], list[str]]:
    """A predict(texts) -> outputs function for a model_registry row."""
    from serving.engine import Engine

    hp = json.loads(row.get("hyperparameters") or "{}")
    adapter = Path(row["adapter_uri"])
    if not adapter.is_dir():
        raise FileNotFoundError(f"adapter of {row['version']} not found at {adapter}: the artifacts "
                                "folder moved? set FLYWHEEL_ARTIFACTS_DIR to where it lives")
    if row["student"] in SERVED_BY_ENGINE:  # the LoRA kinds: exactly the path `flywheel serve` answers by
        engine = Engine()
        engine.load(row["version"], adapter)
        return lambda texts: engine.predict(row["version"], texts)
    if row["student"] == "encoder_full":
        from training.students.encoder import EncoderPredictor

        return EncoderPredictor(adapter, row["base_model"], hp.get("max_length", 128)).predict
    if row["student"] == "embedding_head":
        from training.students.head import HeadPredictor

        return HeadPredictor(adapter, row["base_model"]).predict
    raise ValueError(f"{row['version']}: unknown student kind {row['student']!r}")
