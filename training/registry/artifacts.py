"""Immutable, versioned model artifacts, and loading a registered version to predict.

    <artifacts>/<task>/<task>-v<N>-<hash8>/
        adapter/                 adapter weights (+ tokenizer, labels.json or chat.json)
        train_config.json        hyperparameters and student
        dataset_manifest.json
        base_model.json          base model identity (package and version, or id; file hashes)
        adapter/README.md        the model card: task, data, gold scores per slice, verdict
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


def _installed_package(path: Path) -> dict | None:
    """The installed distribution a path lies in (e.g. the packaged MiniLM), as a portable
    identity: package, version and the path inside the package, no machine path."""
    import importlib.metadata as md
    import sys
    import sysconfig

    roots = {Path(p).resolve() for p in (sysconfig.get_paths().get("purelib"), sysconfig.get_paths().get("platlib"))
             if p} | {Path(p).resolve() for p in sys.path if p.endswith("site-packages")}
    path = path.resolve()
    for root in roots:
        try:
            rel = path.relative_to(root)
        except ValueError:
            continue
        if not rel.parts:
            return None
        dists = md.packages_distributions().get(rel.parts[0], [])
        if not dists:
            return None
        dist = dists[0]
        return {"package": dist, "version": md.version(dist), "path_in_package": rel.as_posix()}
    return None


def base_model_identity(base: str) -> dict:
    """A portable identity of the base model: the installed package and version it ships in
    (or the hub id, or the directory the task file names), with hashes of its config and
    weight files. A model inside the virtualenv is never recorded by its absolute path."""
    from serving.gguf import gguf_identity

    ident: dict = gguf_identity(base) or {"name_or_path": base}
    p = Path(base)
    if p.is_dir():
        pkg = _installed_package(p)
        if pkg is not None:
            ident = {"name_or_path": f"{pkg['package']}=={pkg['version']}:{pkg['path_in_package']}", **pkg}
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
    for lib in ("transformers", "peft", "torch"):
        try:
            import importlib.metadata as md

            ident[lib] = md.version(lib)
        except Exception:  # pragma: no cover - not installed
            pass
    return ident


def model_card(version: str, task, train_config: dict, base_identity: dict, manifest: dict,
               verdict: dict | None) -> str:
    """The adapter's README.md: what the model does, what it learnt from, how it scored on the
    frozen gold set per slice, and the gate's verdict. ``verdict`` is Verdict.to_dict()."""
    labels = getattr(task, "labels", None)
    lines = [f"# {version}", "",
             f"A LoRA adapter for the flywheel task **{task.name}**"
             + ", trained by distilling a teacher's "
             "logged answers into a small student.", "",
             "## Task", "",
             f"- task file: `{Path(getattr(task, 'source', '')).name}`",
             f"- output: {'one of ' + ', '.join(f'`{x}`' for x in labels) if labels else 'a JSON object (output_schema)'}",
             f"- slices: `{getattr(task, 'slice_rule', '')}`", "",
             "## Base model and training", "",
             f"- student: `{train_config.get('student', '')}`",
             f"- base model: `{base_identity.get('name_or_path', '')}`"
             + (f" (weights sha256 `{str(base_identity['weights_sha256'])[:16]}...`)"
                if base_identity.get("weights_sha256") else ""),
             "- hyperparameters: " + ", ".join(f"{k}={train_config[k]}" for k in
                                              ("lora_r", "lora_alpha", "learning_rate", "epochs", "batch_size",
                                               "max_length") if k in train_config), "",
             "## Data", "",
             f"- curated examples up to watermark `{manifest.get('watermark', '')}`: {manifest.get('n_rows', 0)} "
             f"({manifest.get('n_train', 0)} train, {manifest.get('n_validation', 0)} validation); gold overlaps "
             f"excluded: {manifest.get('excluded_gold_overlaps', 0)}",
             f"- content hash `{manifest.get('content_hash', '')}`",
             "- labels: " + ", ".join(f"{k} {v}" for k, v in manifest.get("label_counts", {}).items()),
             "- slices: " + ", ".join(f"{k or '(empty)'} {v}" for k, v in manifest.get("slice_counts", {}).items()),
             ""]
    if verdict:
        lines += [f"## Gold set v{verdict['gold_version']}: {'APPROVED' if verdict['approved'] else 'REJECTED'}", "",
                  f"Baseline: {verdict['baseline']}.", "",
                  "| slice | n | score | baseline | status |", "| --- | ---: | ---: | ---: | --- |",
                  f"| overall | {verdict['n']} | {verdict['overall']:.4f} | {verdict['baseline_overall']:.4f} | "
                  f"{'ok' if verdict['approved'] or verdict['overall'] >= verdict['baseline_overall'] else 'regressed'} |"]
        for s in verdict["slices"]:
            lines.append(f"| {s['slice'] or '(empty)'} | {s['n']} | {s['score']:.4f} | {s['baseline']:.4f} | "
                         f"{s['status']} |")
        if verdict["reasons"]:
            lines += ["", "Why rejected:", ""] + [f"- {r}" for r in verdict["reasons"]]
        if verdict.get("warnings"):
            lines += ["", "Warnings:", ""] + [f"- {w}" for w in verdict["warnings"]]
        lines.append("")
    lines += ["## Files", "", "`train_config.json`, `dataset_manifest.json`, `base_model.json`, `eval.json` next "
              "to this adapter directory hold the full lineage; the version is sealed (read-only) once gated.", ""]
    return "\n".join(lines)


def write_model_card(vdir: Path, version: str, task, train_config: dict, base_identity: dict, manifest: dict,
                     verdict) -> Path:
    """Replace peft's empty template (adapter/README.md) with the model card; call before seal()."""
    vd = verdict.to_dict() if hasattr(verdict, "to_dict") else verdict
    path = Path(vdir) / "adapter" / "README.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(model_card(version, task, train_config, base_identity, manifest, vd))
    return path
