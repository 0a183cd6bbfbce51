"""Causal-LM SFT mechanics on a tiny randomly initialised Qwen2 with a tiny offline tokenizer."""

import math

import pytest
import torch

from tests.helpers.testing import tiny_chat_tokenizer
from training.students.causal_lm import IGNORE, CausalPredictor, collate, encode_example, train_causal
from training.students.config import TrainConfig
from training.students.loop import fit

WORDS = ("system user assistant you are a classifier answer with the label only pay at for bus train "
         "shop market rent flat groceries transport dining cafe pizza").split()
SYSTEM = "you are a classifier answer with the label only"


def tiny_tokenizer():
    return tiny_chat_tokenizer(WORDS)


def tiny_model(vocab_size):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      tie_word_embeddings=False, initializer_range=0.3)
    return Qwen2ForCausalLM(cfg)


DATA = [("pay at market", "groceries"), ("shop market", "groceries"), ("bus train", "transport"),
        ("pay for bus", "transport"), ("cafe pizza", "dining"), ("pay at cafe", "dining"),
        ("rent flat", "rent"), ("pay for flat rent", "rent")]


def rows(n):
    return [{"id": f"e{i}", "input": DATA[i % len(DATA)][0], "output": DATA[i % len(DATA)][1], "slice": ""}
            for i in range(n)]


@pytest.fixture
def base_dir(tmp_path):
    tok = tiny_tokenizer()
    model = tiny_model(len(tok))
    d = tmp_path / "tiny-qwen2"
    model.save_pretrained(d)
    # the tokenizer in its own folder: next to a qwen2 config.json, AutoTokenizer would build a
    # Qwen2Tokenizer instead of this WordLevel one
    tok.save_pretrained(tmp_path / "tiny-tokenizer")
    return d


def test_labels_cover_the_assistant_turn_only():
    tok = tiny_tokenizer()
    ex = encode_example(tok, SYSTEM, "pay at market", "groceries", 64)
    assert len(ex["input_ids"]) == len(ex["labels"])
    kept = [t for t in ex["labels"] if t != IGNORE]
    assert tok.convert_ids_to_tokens(kept) == ["groceries", "<|im_end|>"]
    n_prompt = ex["labels"].index(kept[0])
    assert tok.convert_ids_to_tokens(ex["input_ids"][n_prompt - 2:n_prompt]) == ["<|im_start|>", "assistant"]
    # truncation keeps the answer
    short = encode_example(tok, SYSTEM, "pay at market", "groceries", 6)
    assert len(short["input_ids"]) == 6 and [t for t in short["labels"] if t != IGNORE] == kept


def test_loss_is_the_mean_over_assistant_tokens_only():
    tok = tiny_tokenizer()
    model = tiny_model(len(tok)).eval()
    batch = collate([encode_example(tok, SYSTEM, i, o, 64) for i, o in DATA[:3]], tok.pad_token_id)
    with torch.no_grad():
        out = model(**batch)
    logits, labels = out.logits[:, :-1], batch["labels"][:, 1:]
    mask = labels != IGNORE
    manual = torch.nn.functional.cross_entropy(logits[mask], labels[mask])
    assert math.isclose(float(out.loss), float(manual), rel_tol=1e-5)
    assert int(mask.sum()) == 6  # 3 examples x (label + end of turn)
    # the prompt and padding positions get no gradient
    logits_leaf = out.logits.detach().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(logits_leaf[:, :-1][mask], labels[mask])
    loss.backward()
    grad_per_pos = logits_leaf.grad[:, :-1].abs().sum(-1)
    assert bool((grad_per_pos[~mask] == 0).all()) and bool((grad_per_pos[mask] > 0).all())


def test_sft_lora_trains_saves_and_reloads(base_dir, tmp_path):
    cfg = TrainConfig(student="causal_lm", base_model=str(base_dir), target_modules=("q_proj", "v_proj"),
                      tokenizer=str(base_dir.parent / "tiny-tokenizer"), lora_r=4, lora_alpha=8, lora_dropout=0.0, learning_rate=2e-2, epochs=6, batch_size=8,
                      max_length=64, quantization="none", system_prompt=SYSTEM, max_new_tokens=3,
                      early_stopping_patience=2, warmup_share=0.0)
    steps = []
    result = train_causal(cfg, rows(48), rows(16), tmp_path / "adapter", lambda s, t, i: steps.append(s))
    losses = [h["val_loss"] for h in result.history]
    assert losses[result.best_epoch - 1] == min(losses) and min(losses) < losses[0]
    assert steps[-1] == result.steps and (tmp_path / "adapter" / "adapter_config.json").is_file()

    predictor = CausalPredictor(tmp_path / "adapter", str(base_dir), quantization="none")
    # the reloaded adapter reproduces the trained model's validation loss
    tok = predictor.tok
    batch = collate([encode_example(tok, SYSTEM, r["input"], r["output"], 64) for r in rows(16)], tok.pad_token_id)
    with torch.no_grad():
        reloaded = float(predictor.model(**batch).loss)
    assert math.isclose(reloaded, min(losses), rel_tol=1e-4)
    answers = predictor.predict([d[0] for d in DATA])
    assert len(answers) == len(DATA) and all(isinstance(a, str) for a in answers)
    assert sum(a == d[1] for a, d in zip(answers, DATA)) >= 4, answers  # chance is 2 of 8


def test_fit_keeps_the_best_epoch_not_the_last():
    torch.manual_seed(0)
    model = torch.nn.Linear(1, 1, bias=False)
    seen = []

    def evaluate():
        seen.append(float(model.weight))
        return {"val": [0.5, 0.9, 0.7, 0.6][len(seen) - 1]}

    res = fit(model, lambda e: [0], lambda b: (model.weight - 10).pow(2).sum(), evaluate, epochs=4,
              learning_rate=0.5, weight_decay=0.0, warmup_share=0.0, patience=5, metric="val", mode="max",
              desc="t")
    assert res.best_epoch == 2 and res.epochs_run == 4
    assert float(model.weight) == seen[1] != seen[-1]


def test_fit_stops_early():
    model = torch.nn.Linear(1, 1, bias=False)
    vals = iter([0.9, 0.8, 0.7, 0.6, 0.5])
    res = fit(model, lambda e: [0], lambda b: model.weight.sum() * 0, lambda: {"val": next(vals)}, epochs=5,
              learning_rate=0.1, weight_decay=0.0, warmup_share=0.0, patience=1, metric="val", mode="max", desc="t")
    assert res.epochs_run == 3 and res.best_epoch == 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_qlora_4bit_nf4_on_gpu(base_dir, tmp_path):
    pytest.importorskip("bitsandbytes")
    cfg = TrainConfig(student="causal_lm", base_model=str(base_dir), target_modules=("q_proj", "v_proj"),
                      tokenizer=str(base_dir.parent / "tiny-tokenizer"), lora_r=4, lora_alpha=8, learning_rate=2e-2, epochs=2, batch_size=8, max_length=64,
                      quantization="4bit", system_prompt=SYSTEM)
    result = train_causal(cfg, rows(32), rows(8), tmp_path / "adapter")
    assert result.steps > 0 and (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
