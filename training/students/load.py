"""Load a registered student for inference: the one path the gate and the server use.

The gate's predictor is the model server's engine (serving.engine) holding this one adapter:
the same base loading, the same prompt (the trained system prompt + the input), the same
greedy decoding or classification head, so a version scores on the gold set exactly as it
answers when served.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable


def load_predictor(row: dict) -> Callable[[list[str]], list[str]]:
    """A predict(texts) -> outputs function for a model_registry row."""
    from serving.engine import Engine

    adapter = Path(row["adapter_uri"])
    if not adapter.is_dir():
        raise FileNotFoundError(f"adapter of {row['version']} not found at {adapter}: the artifacts "
                                "folder moved? set FLYWHEEL_ARTIFACTS_DIR to where it lives")
    engine = Engine()
    engine.load(row["version"], adapter)
    return lambda texts: engine.predict(row["version"], texts)
