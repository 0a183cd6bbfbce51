"""Load a registered student for inference: the one path the gate and the server use.

The gate's predictor is the model server's engine (serving.engine) holding this one version:
the same loading, the same prompt (the trained system prompt + the input), the same greedy
decoding, classification head or linear head on pooled embeddings, for every student kind, so
a version scores on the gold set exactly as it answers when served.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable


def load_predictor(row: dict) -> Callable[[list[str]], list[str]]:
    """A predict(texts) -> outputs function for a model_registry row."""
    from serving.engine import KINDS, Engine

    adapter = Path(row["adapter_uri"])
    if not adapter.is_dir():
        raise FileNotFoundError(f"adapter of {row['version']} not found at {adapter}: the artifacts "
                                "folder moved? set FLYWHEEL_ARTIFACTS_DIR to where it lives")
    if row["student"] not in KINDS:
        raise ValueError(f"{row['version']}: unknown student kind {row['student']!r} (known: {', '.join(KINDS)})")
    engine = Engine()
    engine.load(row["version"], adapter)
    return lambda texts: engine.predict(row["version"], texts)
