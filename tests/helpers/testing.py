
"""Helpers shared by the training tests and the benchmark (real broker, real chdb)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from datetime import datetime, timezone
from pathlib import Path

import orjson

from schemas.topics import RETRAIN_REQUESTS

TX_TRAIN = """
[train]
student = "encoder_classifier"
epochs = 2
min_steps = 1
max_length = 32
batch_size = 16
learning_rate = 3e-3
validation_share = 0.15
early_stopping_patience = 1

[gate]
min_slice_examples = 10
slice_tolerance = 0.02
"""


@contextlib.contextmanager
def owned_store(settings):
    """Own the embedded store as `flywheel up` would, and serve it to other processes."""
    from kernel.warehouse.embedded import EmbeddedWarehouse
    from kernel.warehouse.migrate import apply_ddl
    from kernel.warehouse.owner import OwnerServer

    store = EmbeddedWarehouse(settings.chdb_path, lock_dir=settings.data_dir)
    apply_ddl(store, window_seconds=settings.window_seconds)
    server = OwnerServer(store, settings.data_dir).start()
    try:
        yield store
    finally:
        server.stop()
        store.close()


def add_sections(tasks_dir: Path, text: str = TX_TRAIN, name: str = "transactions.toml") -> None:
    p = Path(tasks_dir) / name
    p.write_text(p.read_text() + "\n" + text)


def request(task: str, watermark: str, gold_version: int, kind: str = "manual", detail: str = "") -> dict:
    rid = hashlib.sha256(f"{task}|{kind}|{detail}|{watermark}".encode()).hexdigest()[:24]
    return {"request_id": rid, "task": task, "reason": {"kind": kind, "alert_ids": [], "detail": detail},
            "watermark": watermark, "gold_version": gold_version,
            "requested_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "schema_version": 1}


async def _publish(kafka, topic: str, values: list) -> None:
    from aiokafka import AIOKafkaProducer

    p = AIOKafkaProducer(**kafka.aiokafka_kwargs())
    await p.start()
    try:
        for v in values:
            data = v if isinstance(v, bytes) else orjson.dumps(v)
            await p.send_and_wait(topic, data, key=b"k")
    finally:
        await p.stop()


def publish_requests(settings, values: list) -> None:
    asyncio.run(_publish(settings.kafka, RETRAIN_REQUESTS.name, values))


async def _read_all(kafka, topic: str, timeout: float) -> list[dict]:
    from aiokafka import AIOKafkaConsumer

    c = AIOKafkaConsumer(topic, **kafka.aiokafka_kwargs(), auto_offset_reset="earliest",
                         enable_auto_commit=False, group_id=None)
    await c.start()
    out = []
    try:
        while True:
            batch = await c.getmany(timeout_ms=int(timeout * 1000))
            msgs = [m for ms in batch.values() for m in ms]
            if not msgs:
                break
            out += [orjson.loads(m.value) for m in msgs]
    finally:
        await c.stop()
    return out


def read_topic(settings, topic: str, timeout: float = 2.0) -> list[dict]:
    return asyncio.run(_read_all(settings.kafka, topic, timeout))


def insert_examples(store, rows: list[dict]) -> None:
    for i in range(0, len(rows), 5000):
        store.insert("examples", rows[i:i + 5000])


# ---------------------------------------------------------------- a tiny offline causal LM

CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def tiny_chat_tokenizer(words):
    """A word-level tokenizer with a ChatML template over the given words (offline)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<|im_start|>", "<|im_end|>"]
    vocab: dict[str, int] = {}
    for w in specials + ["system", "user", "assistant"] + list(words):
        vocab.setdefault(w, len(vocab))
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", unk_token="<unk>",
                                  eos_token="<|im_end|>", bos_token=None)
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>"]})
    tok.chat_template = CHAT_TEMPLATE
    return tok


def tiny_causal_lm(root: Path, words: list[str], seed: int = 0) -> tuple[Path, Path]:
    """A randomly initialised 2-layer Qwen2 and a word-level tokenizer (ChatML template) saved
    under root; returns (model_dir, tokenizer_dir). Nothing is downloaded.

    The tokenizer gets its own folder: next to a qwen2 config.json, AutoTokenizer would build a
    Qwen2Tokenizer instead of this WordLevel one."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = tiny_chat_tokenizer(words)
    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      tie_word_embeddings=False, initializer_range=0.3)
    model_dir, tok_dir = Path(root) / "tiny-qwen2", Path(root) / "tiny-tokenizer"
    Qwen2ForCausalLM(cfg).save_pretrained(model_dir)
    tok.save_pretrained(tok_dir)
    return model_dir, tok_dir


def wait_until(pred, timeout: float, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = pred()
        if out:
            return out
        time.sleep(every)
    return None


def make_store(data_dir):
    """An embedded store under data_dir, as `flywheel up` leaves it."""
    from kernel.settings import load_settings
    from kernel.warehouse import open_warehouse
    from kernel.warehouse.migrate import apply_ddl

    with open_warehouse(load_settings({}, data_dir=data_dir)) as w:
        apply_ddl(w)


def add_examples(store, n, at, start=0, task="tx"):
    store.insert("examples", [{"id": f"x{start + i}", "ts": at, "task": task, "input": f"shop {start + i}",
                               "output": "a", "slice": "", "confidence": 0.9, "teacher": "t", "meta": "{}",
                               "input_hash": i, "source_partition": 0, "source_offset": i, "curated_at": at}
                              for i in range(n)])
