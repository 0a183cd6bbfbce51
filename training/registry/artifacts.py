"""Immutable, versioned model artifacts, and loading a registered version to predict.

    <artifacts>/<task>/<task>-v<N>-<hash8>/
        adapter/                 adapter weights (+ tokenizer, labels.json or chat.json)
        train_config.json        hyperparameters and student
        dataset_manifest.json
        base_model.json          base model identity (path or id, file hashes)
        gold_predictions_v<G>.jsonl
        COMPLETE                 written last; a directory without it is an abandoned attempt

A version directory is reserved with an exclusive mkdir, so a name is never used twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path


def reserve_version(root: Path, task: str, seq: int, salt: str) -> tuple[str, int, Path]:
    """Reserve the first free ``<task>-v<N>-<hash8>`` with N >= seq (exclusive mkdir)."""
    base = Path(root) / task
    base.mkdir(parents=True, exist_ok=True)
    n = seq
    while True:
        short = hashlib.sha256(f"{task}|{n}|{salt}".encode()).hexdigest()[:8]
        name = f"{task}-v{n}-{short}"
        path = base / name
        try:
            path.mkdir()
        except FileExistsError:
            n += 1
            continue
        # also never reuse a number already taken under another hash
        if any(p.name.startswith(f"{task}-v{n}-") and p.name != name for p in base.iterdir()):
            path.rmdir()
            n += 1
            continue
        return name, n, path


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))


def seal(path: Path) -> None:
    """Mark a version complete and make its files read-only."""
    (path / "COMPLETE").write_text("")
    for p in path.rglob("*"):
        if p.is_file():
            os.chmod(p, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)


def base_model_identity(base: str) -> dict:
    """Path or id of the base model with hashes of its config and weight files."""
    ident: dict = {"name_or_path": base}
    p = Path(base)
    if p.is_dir():
        files = {}
        for f in sorted(p.iterdir()):
            if f.suffix in (".json", ".safetensors", ".bin", ".model", ".txt") and f.is_file():
                h = hashlib.sha256()
                with open(f, "rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        h.update(chunk)
                files[f.name] = h.hexdigest()
        ident["files_sha256"] = files
        weights = [v for k, v in files.items() if k.endswith((".safetensors", ".bin"))]
        ident["weights_sha256"] = hashlib.sha256("".join(weights).encode()).hexdigest() if weights else None
    try:
        import transformers
        ident["transformers"] = transformers.__version__
    except ImportError:  # pragma: no cover
        pass
    return ident
