"""The inference engine: one base model in memory per base, several LoRA adapters on it at once,
and the student kinds that are not LoRA adapters (a fully fine-tuned encoder, a linear head on a
frozen encoder).

An adapter ("version") is what the training worker writes (training/registry/artifacts.py):

    <version dir>/train_config.json      student and hyperparameters (base_model, max_length, ...)
    <version dir>/adapter/               by student kind:
        encoder_classifier               LoRA weights (adapter_config.json) + tokenizer + labels.json
        causal_lm                        LoRA weights + tokenizer + chat.json (system prompt, max_new_tokens)
        encoder_full                     the whole fine-tuned model (config.json, weights) + tokenizer + labels.json
        embedding_head                   head.safetensors (weight, bias) + labels.json + student.json

A fully fine-tuned encoder is its own model (one group per folder, 22M parameters); heads on one
frozen base share that base (one group per base), each head a [labels, dim] matrix.

Adapters on the same base share one model object (peft multi-adapter: ``load_adapter`` and
``set_adapter``); the adapter is chosen per call by name. Encoder students carry their own
classification head (peft ``modules_to_save``), whose shape is the task's label count, so the
encoder base is shared by adapters with the same number of labels; a task with another label
count gets its own copy of the (22M-parameter) encoder.

Names are immutable: loading a name again with a different path is refused (a name always
means one adapter), the same name and path is a no-op. The gate and the server call the same
``predict`` (texts -> outputs), so evaluation and serving share one inference path.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .encoders import BaseModelError, encode_texts, load_encoder_base, load_sentence_encoder, pool

__all__ = ["Engine", "AdapterError", "AdapterNotFound", "AdapterConflict", "AdapterInfo", "read_adapter",
           "encode_texts", "load_encoder_base", "load_causal_base", "ENCODER", "FULL", "HEAD", "CAUSAL",
           "CLASSIFIERS", "KINDS"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ENCODER = "encoder_classifier"
FULL = "encoder_full"
HEAD = "embedding_head"
CAUSAL = "causal_lm"
CLASSIFIERS = (ENCODER, FULL, HEAD)       # answer /classify: a label and its probabilities
KINDS = CLASSIFIERS + (CAUSAL,)           # every student kind the trainer registers
LORA = (ENCODER, CAUSAL)                  # adapters attached to a shared base through peft


class AdapterError(ValueError):
    """An adapter cannot be loaded or used; the message names the fix."""


class AdapterNotFound(AdapterError):
    pass


class AdapterConflict(AdapterError):
    pass


@dataclass(frozen=True)
class AdapterInfo:
    """What an adapter directory says about itself."""
    path: Path                      # the adapter directory (adapter_config.json inside)
    student: str                    # one of KINDS
    base_model: str                 # as configured ([train] base_model)
    max_length: int = 128
    quantization: str = "auto"
    labels: tuple[str, ...] | None = None
    system_prompt: str | None = None
    max_new_tokens: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"adapter_uri": str(self.path), "student": self.student, "base_model": self.base_model,
                "max_length": self.max_length, "labels": list(self.labels) if self.labels else None,
                "system_prompt": self.system_prompt, "max_new_tokens": self.max_new_tokens}


def chat_messages(system: str, user: str) -> list[dict]:
    """The prompt a causal student was trained on (system + user), as the gate and router build it."""
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def token_ids(out) -> list[int]:
    # transformers 5 returns a BatchEncoding from apply_chat_template(tokenize=True)
    if isinstance(out, dict) or hasattr(out, "keys"):
        out = out["input_ids"]
    return list(out)


def causal_base_kwargs(four_bit: bool, who: str = "QLoRA", error: type[Exception] = RuntimeError) -> dict:
    """from_pretrained arguments of a causal base, the one way training and serving load it:
    4-bit NF4 with double quantisation and bf16 compute on GPU 0 when ``four_bit`` (QLoRA), else
    bf16 on GPU 0 when CUDA is there, else full precision on the CPU. Without bitsandbytes, a
    4-bit load raises ``error`` ("``who`` needs bitsandbytes: ...")."""
    import torch

    kwargs: dict = {"local_files_only": True}
    if four_bit:
        try:
            import bitsandbytes  # noqa: F401
            from transformers import BitsAndBytesConfig
        except ImportError:
            raise error(f"{who} needs bitsandbytes: pip install -e '.[gpu]'") from None
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16)
        kwargs.update(device_map={"": 0}, dtype=torch.bfloat16)
    elif torch.cuda.is_available():
        kwargs.update(device_map={"": 0}, dtype=torch.bfloat16)
    return kwargs


def load_causal_base(base: str, quantization: str = "auto", tokenizer: str | None = None):
    """Tokenizer and causal LM of a base (a GGUF file is converted once, see serving.gguf); 4-bit
    NF4 on CUDA when quantization is "auto" or "4bit", as the QLoRA student was trained.
    ``tokenizer``: where to read the tokenizer from instead of the base (the adapter's copy)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .gguf import resolve_base_model

    path = resolve_base_model(base)
    cuda = torch.cuda.is_available()
    if quantization == "4bit" and not cuda:
        raise AdapterError('this adapter was trained with quantization = "4bit" (QLoRA), which needs a CUDA GPU')
    kwargs = causal_base_kwargs(cuda and quantization in ("auto", "4bit"), "serving a QLoRA student on CUDA",
                                AdapterError)
    try:
        tok = AutoTokenizer.from_pretrained(tokenizer or path, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except OSError as exc:
        raise AdapterError(f"cannot load base model {base!r} offline ({exc}); the adapter was trained on it: "
                           "make it available at that path") from None
    return tok, model


def _kind_of_folder(d: Path) -> str | None:
    """The student kind a folder's files say it holds (None: not a model folder)."""
    if (d / "adapter_config.json").is_file():
        return "lora"
    if (d / "head.safetensors").is_file():
        return HEAD
    if (d / "config.json").is_file() and (d / "labels.json").is_file():
        return FULL
    return None


def adapter_dir(path: str | Path) -> Path:
    """The model folder for a version directory or a model folder (adapter/ of a version)."""
    p = Path(path)
    if _kind_of_folder(p / "adapter"):
        return p / "adapter"
    if _kind_of_folder(p):
        return p
    raise AdapterNotFound(f"{p}: no adapter here (no adapter_config.json, head.safetensors or config.json with "
                          f"labels.json in it or in {p / 'adapter'}); give the adapter directory of a trained "
                          "version (model_registry.adapter_uri)")


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise AdapterError(f"{path}: unreadable ({exc})") from None


def read_adapter(path: str | Path) -> AdapterInfo:
    """Describe a trained version's model folder from the files the training worker wrote."""
    d = adapter_dir(path)
    folder = _kind_of_folder(d)
    acfg = _json(d / "adapter_config.json") if folder == "lora" else {}
    hp: dict = {}
    student = None
    tc = d.parent / "train_config.json"
    if tc.is_file():
        doc = _json(tc)
        hp, student = doc.get("hyperparameters") or {}, doc.get("student")
    labels = chat = meta = None
    if (d / "labels.json").is_file():
        labels = tuple(_json(d / "labels.json"))
    if (d / "chat.json").is_file():
        chat = _json(d / "chat.json")
    if (d / "student.json").is_file():
        meta = _json(d / "student.json")
    if student is None:
        student = (folder if folder in (FULL, HEAD) else ENCODER if labels is not None
                   else CAUSAL if chat is not None else None)
    if student not in KINDS:
        raise AdapterError(f"{d}: cannot tell the student kind (no train_config.json next to it naming one of "
                           f"{', '.join(KINDS)}, and neither labels.json nor chat.json in it)")
    expected = "lora" if student in LORA else student
    if folder != expected:
        raise AdapterError(f"{d}: train_config.json says {student}, but the folder holds "
                           f"{'a LoRA adapter' if folder == 'lora' else folder} files; the version is damaged: "
                           "train it again")
    if student in CLASSIFIERS and not labels:
        raise AdapterError(f"{d}: an {student} model needs labels.json")
    if student == CAUSAL and chat is None:
        raise AdapterError(f"{d}: a causal_lm adapter needs chat.json (system_prompt, max_new_tokens)")
    base = hp.get("base_model") or acfg.get("base_model_name_or_path") or (meta or {}).get("base_model")
    if student == FULL:
        base = base or str(d)   # the folder is the whole model; base_model names where it started from
    if not base:
        raise AdapterError(f"{d}: no base model named (train_config.json hyperparameters.base_model, "
                           "adapter_config.json base_model_name_or_path or student.json base_model)")
    max_length = (meta or {}).get("max_length") or hp.get("max_length") or (512 if student == CAUSAL else 128)
    return AdapterInfo(path=d.resolve(), student=student, base_model=base, max_length=int(max_length),
                       quantization=hp.get("quantization", "auto"), labels=labels,
                       system_prompt=(chat or {}).get("system_prompt"),
                       max_new_tokens=(chat or {}).get("max_new_tokens"))


@dataclass
class _Group:
    """One base model and the adapters loaded on it (LoRA kinds), one fully fine-tuned encoder
    (encoder_full), or one frozen encoder and the linear heads on it (embedding_head)."""
    key: tuple
    model: Any                        # LoRA kinds: a PeftModel once the first adapter is on it
    base_tokenizer: Any
    adapters: dict[str, AdapterInfo] = field(default_factory=dict)
    heads: dict[str, tuple] = field(default_factory=dict)            # embedding_head: name -> (weight, bias)
    # LoRA kinds: name -> peft adapter name. peft matches adapter names against module names
    # (a name holding "classifier" is refused next to the head's modules_to_save), so the
    # adapters get neutral slot names of their own
    slots: dict[str, str] = field(default_factory=dict)
    next_slot: int = 0
    tokenizers: dict[str, Any] = field(default_factory=dict)
    shared_tokenizers: dict[str, Any] = field(default_factory=dict)   # content hash -> tokenizer
    lock: threading.Lock = field(default_factory=threading.Lock)
    active: str | None = None


@dataclass(frozen=True)
class Classification:
    label: str
    probs: list[float]
    prompt_tokens: int


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


class Engine:
    """Loaded adapters by name, grouped on shared base models. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.RLock()          # the maps; held briefly, also by requests
        self._load_lock = threading.Lock()      # one load or unload at a time
        self._groups: dict[tuple, _Group] = {}
        self._where: dict[str, _Group] = {}
        self._paths: dict[str, Path] = {}       # every name ever loaded -> its path (immutable names)
        self.loaded_at: dict[str, float] = {}

    # ------------------------------------------------------------------ adapters
    def names(self) -> list[str]:
        with self._lock:
            return list(self._where)

    def info(self, name: str) -> AdapterInfo:
        with self._lock:
            g = self._where.get(name)
            if g is None:
                raise AdapterNotFound(f"The lora adapter '{name}' cannot be found.")
            return g.adapters[name]

    def bases(self) -> list[dict]:
        with self._lock:
            return [{"key": list(map(str, g.key)), "adapters": list(g.adapters)} for g in self._groups.values()]

    def load(self, name: str, path: str | Path) -> bool:
        """Load an adapter under an immutable name. False if that very adapter is already loaded.

        Loads are serialised among themselves but never hold the lock the request path takes:
        requests on other bases go on while a base model loads, and requests on the same base
        wait only while the adapter is attached to it."""
        if not name or not isinstance(name, str):
            raise AdapterError("lora_name must be a non-empty string")
        d = adapter_dir(path).resolve()
        with self._load_lock:
            with self._lock:
                used = self._paths.get(name)
                if used is not None and used != d:
                    raise AdapterConflict(
                        f"LoRA adapter name '{name}' was already used for {used}; adapter names are immutable "
                        f"(a server could answer from stale caches of the old adapter). Load {d} under a new name")
                if name in self._where:
                    return False
            info = read_adapter(d)
            key = self._key(info)
            with self._lock:
                g = self._groups.get(key)
            if g is None:
                g = self._new_group(key, info)         # the base model: seconds, no lock held
                with self._lock:
                    self._groups[key] = g
            with g.lock:
                self._attach(g, name, info)
            with self._lock:
                self._where[name] = g
                self._paths[name] = d
                self.loaded_at[name] = time.time()
            return True

    def unload(self, name: str) -> None:
        with self._load_lock:
            with self._lock:
                g = self._where.pop(name, None)
                if g is None:
                    raise AdapterNotFound(f"The lora adapter '{name}' cannot be found.")
                self.loaded_at.pop(name, None)
                last = len(g.adapters) == 1
                if last:                 # the last adapter: free the base model too
                    del self._groups[g.key]
            with g.lock:
                info = g.adapters.pop(name, None)
                g.tokenizers.pop(name, None)
                g.heads.pop(name, None)
                if last:
                    g.model = None
                    return
                if g.active == name:
                    g.active = None
                slot = g.slots.pop(name, None)
                if info is not None and info.student in LORA and slot is not None:
                    g.model.delete_adapter(slot)

    @staticmethod
    def _key(info: AdapterInfo) -> tuple:
        if info.student == FULL:            # the folder is the model: nothing to share
            return (FULL, str(info.path))
        from .gguf import resolve_base_model

        base = resolve_base_model(info.base_model)
        if info.student == ENCODER:
            return (ENCODER, base, len(info.labels or ()))
        if info.student == HEAD:
            return (HEAD, base)
        return (CAUSAL, base, info.quantization)

    def _new_group(self, key: tuple, info: AdapterInfo) -> _Group:
        try:
            if info.student == ENCODER:
                tok, model = load_encoder_base(key[1], info.labels)
            elif info.student == FULL:
                tok, model = load_encoder_base(str(info.path), info.labels)
            elif info.student == HEAD:
                tok, model = load_sentence_encoder(key[1])
            else:
                own = str(info.path) if (info.path / "tokenizer_config.json").is_file() else None
                tok, model = load_causal_base(key[1], info.quantization, own)
        except BaseModelError as exc:
            raise AdapterError(f"{exc}; the version was trained on it") from None
        model.eval()
        return _Group(key=key, model=model, base_tokenizer=tok)

    @staticmethod
    def _attach(g: _Group, name: str, info: AdapterInfo) -> None:
        if info.student == HEAD:
            g.heads[name] = Engine._head(info, g.model.config.hidden_size)
        elif info.student in LORA:
            from peft import PeftModel

            slot = f"slot{g.next_slot}"
            if not isinstance(g.model, PeftModel):
                g.model = PeftModel.from_pretrained(g.model, str(info.path), adapter_name=slot).eval()
            else:
                g.model.load_adapter(str(info.path), adapter_name=slot)
                g.model.eval()
            g.next_slot += 1
            g.slots[name] = slot
            g.active = None
        g.adapters[name] = info
        g.tokenizers[name] = g.base_tokenizer if info.student in (FULL, HEAD) else Engine._tokenizer(g, info.path)

    @staticmethod
    def _head(info: AdapterInfo, dim: int) -> tuple:
        """(weight [labels, dim], bias [labels]) of an embedding_head version, shapes checked."""
        from safetensors.torch import load_file

        t = load_file(str(info.path / "head.safetensors"))
        if "weight" not in t or "bias" not in t:
            raise AdapterError(f"{info.path / 'head.safetensors'}: needs tensors 'weight' and 'bias'")
        w, b = t["weight"].float(), t["bias"].float()
        n = len(info.labels or ())
        if tuple(w.shape) != (n, dim) or tuple(b.shape) != (n,):
            raise AdapterError(f"{info.path}: head shapes {tuple(w.shape)}, {tuple(b.shape)} do not fit {n} labels "
                               f"on a {dim}-dimensional encoder ({info.base_model}); was it trained on another base?")
        return w, b

    @staticmethod
    def _tokenizer(g: _Group, path: Path):
        """The adapter's own tokenizer (saved with it), shared between adapters whose tokenizer
        files are identical (versions of one task usually are): a SmolLM2 tokenizer is ~10 MB."""
        import hashlib

        files = [f for f in sorted(path.iterdir()) if f.name.startswith(("tokenizer", "special_tokens", "vocab",
                                                                          "merges", "chat_template"))]
        if not any(f.name == "tokenizer_config.json" for f in files):
            return g.base_tokenizer
        h = hashlib.sha256()
        for f in files:
            h.update(f.name.encode() + b"\0" + f.read_bytes())
        digest = h.hexdigest()
        tok = g.shared_tokenizers.get(digest)
        if tok is None:
            from transformers import AutoTokenizer

            tok = g.shared_tokenizers[digest] = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        return tok

    def _use(self, name: str) -> _Group:
        with self._lock:
            g = self._where.get(name)
        if g is None:
            raise AdapterNotFound(f"The model '{name}' does not exist: load it first "
                                  "(POST /v1/load_lora_adapter with lora_name and lora_path)")
        return g

    @staticmethod
    def _activate(g: _Group, name: str) -> None:
        if g.key[0] in LORA and g.active != name:
            g.model.set_adapter(g.slots[name])
            g.active = name

    # ------------------------------------------------------------------ inference
    def classify(self, name: str, texts: Sequence[str], batch_size: int = 64) -> list[Classification]:
        import torch

        g = self._use(name)
        with g.lock:
            info = g.adapters.get(name)
            if info is None:
                raise AdapterNotFound(f"The model '{name}' does not exist")
            if info.student not in CLASSIFIERS:
                raise AdapterError(f"'{name}' is a {info.student} adapter: use /v1/chat/completions")
            self._activate(g, name)
            tok = g.tokenizers[name]
            head = g.heads.get(name)
            out: list[Classification] = []
            with torch.inference_mode():
                for i in range(0, len(texts), batch_size):
                    chunk = list(texts[i:i + batch_size])
                    enc = encode_texts(tok, chunk, info.max_length)
                    if head is not None:        # embedding_head: pooled sentence embedding @ head
                        x = pool(g.model(**enc).last_hidden_state, enc["attention_mask"]).float()
                        logits = x @ head[0].T + head[1]
                    else:
                        logits = g.model(**enc).logits
                    probs = torch.softmax(logits.float(), -1)
                    lens = enc["attention_mask"].sum(-1).tolist()
                    for p, n in zip(probs.tolist(), lens):
                        j = max(range(len(p)), key=p.__getitem__)
                        out.append(Classification(info.labels[j], p, int(n)))
            return out

    def chat(self, name: str, messages: list[dict], max_new_tokens: int | None = None) -> Completion:
        """A greedy answer to a chat (the messages as given)."""
        import torch

        g = self._use(name)
        with g.lock:
            info = g.adapters.get(name)
            if info is None:
                raise AdapterNotFound(f"The model '{name}' does not exist")
            if info.student != CAUSAL:
                raise AdapterError(f"'{name}' is an {info.student} adapter: use /classify")
            self._activate(g, name)
            tok = g.tokenizers[name]
            limit = max_new_tokens or info.max_new_tokens or 64
            ids = token_ids(tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True))
            device = next(g.model.parameters()).device
            x = torch.tensor([ids], device=device)
            with torch.inference_mode():
                y = g.model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=limit,
                                     do_sample=False, pad_token_id=tok.pad_token_id or tok.eos_token_id,
                                     eos_token_id=tok.eos_token_id)
            new = y[0, len(ids):].tolist()
            finish = "stop" if tok.eos_token_id is not None and tok.eos_token_id in new else "length"
            text = tok.decode(new, skip_special_tokens=True).strip()
            return Completion(text, len(ids), len(new), finish)

    def predict(self, name: str, texts: Sequence[str]) -> list[str]:
        """Outputs for texts as the gate scores them: a label, or the answer to the trained prompt."""
        info = self.info(name)
        if info.student in CLASSIFIERS:
            return [c.label for c in self.classify(name, texts)]
        return [self.chat(name, chat_messages(info.system_prompt or "", t)).text for t in texts]
