"""The GPU SFT throughput benchmark's logic, run in its --smoke mode on CPU (tiny Qwen2, fp32, LoRA)."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import sft_throughput as sft  # noqa: E402

IGNORE = -100


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("sft") / "sft_smoke.json"
    res = sft.main(["--smoke", "--out", str(out)])
    return res, json.loads(out.read_text())


def test_smoke_json_has_expected_keys(smoke):
    res, written = smoke
    assert written == json.loads(json.dumps(res))
    for k in ("benchmark", "smoke", "device", "versions", "settings", "attn_implementation", "packing", "runs"):
        assert k in written, k
    assert written["smoke"] is True and written["device"]["type"] == "cpu"
    for k in ("torch", "transformers", "peft", "bitsandbytes"):
        assert k in written["versions"]
    assert written["attn_implementation"] in ("sdpa", "eager")
    (run,) = written["runs"]
    assert run["model"] == "tiny" and run["method"] == "lora" and run["error"] is None
    assert set(run["modes"]) == {"padded", "packed"}
    for m in run["modes"].values():
        assert set(sft.KEYS_PER_MODE) <= set(m)
        assert m["error"] is None and m["steps_measured"] == 2
        assert m["tokens_per_s"] > 0 and m["step_time_s_mean"] > 0
        assert m["peak_memory_bytes"] is None  # CPU
    assert set(run["packed_over_padded"]) == {"tokens_per_s", "step_time_s_mean", "peak_memory_bytes"}


def test_smoke_packed_vs_padded_token_accounting(smoke):
    _, res = smoke
    (run,) = res["runs"]
    pad, pk = run["modes"]["padded"], run["modes"]["packed"]
    # the same examples, the same real tokens
    assert pk["examples"] == pad["examples"] > 0
    assert pk["real_tokens"] == pad["real_tokens"] == run["data"]["measured_real_tokens"]
    # packing feeds no pad tokens, padding does (lognormal lengths differ within a batch)
    assert pk["padded_token_share"] == pytest.approx(0.0, abs=1e-9)
    assert pk["processed_tokens"] == pk["real_tokens"]
    assert pad["padded_token_share"] > 0 and pad["processed_tokens"] > pad["real_tokens"]
    # the loss covers the answer tokens only, in both modes
    assert pk["label_tokens"] == pad["label_tokens"] == run["data"]["measured_answer_tokens"]
    assert pad["label_tokens"] < pad["real_tokens"]
    # ratios are computed from the same run's figures
    q = run["packed_over_padded"]
    assert q["tokens_per_s"] == pytest.approx(pk["tokens_per_s"] / pad["tokens_per_s"], rel=1e-2)
    assert q["peak_memory_bytes"] is None
    # transformers 5 + sdpa: packed sequences do not attend to each other (measured, not assumed)
    chk = run["packing_check"]
    assert chk["exact"] is True
    assert chk["max_abs_logit_diff_packed_vs_padded"] < 1e-4 < chk["max_abs_logit_diff_leaky_vs_padded"]


def test_collation_masks_prompts_and_restarts_positions():
    data = sft.synthetic_sft(6, 1024, min_len=16, max_len=128, median=48, seed=3)
    for d in data:
        assert len(d["input_ids"]) == len(d["labels"]) == d["n_prompt"] + d["n_answer"]
        assert 16 <= len(d["input_ids"]) <= 128
        assert d["labels"][:d["n_prompt"]] == [IGNORE] * d["n_prompt"]
        assert d["labels"][d["n_prompt"]:] == d["input_ids"][d["n_prompt"]:]
    answers = sum(d["n_answer"] for d in data)
    lens = [len(d["input_ids"]) for d in data]
    pad_id = sft.special_ids(1024)["pad"]

    pk = sft.collate("packed", data, pad_id, "sdpa")
    assert pk["input_ids"].shape == (1, sum(lens)) and "attention_mask" not in pk
    starts = [sum(lens[:i]) for i in range(len(lens))]
    pos = pk["position_ids"][0].tolist()
    assert [i for i, p in enumerate(pos) if p == 0] == starts
    assert int((pk["labels"] != IGNORE).sum()) == answers
    assert all(pk["labels"][0, s] == IGNORE for s in starts)  # no loss across a sequence boundary
    assert sft.batch_counts(pk) == {"processed_tokens": sum(lens), "real_tokens": sum(lens), "label_tokens": answers}

    pd = sft.collate("padded", data, pad_id, "sdpa")
    assert pd["input_ids"].shape == (len(data), max(lens))
    c = sft.batch_counts(pd)
    assert c == {"processed_tokens": len(data) * max(lens), "real_tokens": sum(lens), "label_tokens": answers}
    # the shifted loss targets are the answers too (the prompt is never empty)
    assert int((pd["labels"][:, 1:] != IGNORE).sum()) == answers

    fa = sft.collate("packed", data, pad_id, "flash_attention_2")
    assert fa["cu_seq_lens_q"].tolist() == starts + [sum(lens)] and fa["max_length_q"] == max(lens)


def test_token_batches_and_errors_are_recorded():
    assert sft.token_batches([5, 5, 5, 20, 1], 10) == [[0, 1], [2], [3], [4]]
    data, groups = sft.make_plan(3, 1, 1024, 256, min_len=16, max_len=128, median=48, seed=0)
    assert len(groups) == 4 and all(sum(len(data[i]["input_ids"]) for i in g) <= 256 or len(g) == 1 for g in groups)
    # a failing config is recorded as an error string, with the figures it has
    import torch

    from training.students.config import DEFAULT_TARGETS, TrainConfig

    tc = TrainConfig(student="causal_lm", target_modules=DEFAULT_TARGETS["causal_lm"], quantization="none")
    model = sft.build_model("tiny", "lora", "sdpa", "cpu", torch.float32, 0, tc)
    r = sft.run_mode(model, "bogus", data, groups, 1, sft.special_ids(1024)["pad"], "sdpa", "cpu", 1e-4)
    assert r["error"].startswith("ValueError") and r["tokens_per_s"] is None
    assert sft.ratios({"padded": r}) == {"tokens_per_s": None, "step_time_s_mean": None, "peak_memory_bytes": None}
    with pytest.raises(RuntimeError, match="CUDA"):
        sft.build_model("tiny", "qlora", "sdpa", "cpu", torch.float32, 0, tc)


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit):
        sft.main(["--help"])
    text = capsys.readouterr().out
    for opt in ("--models", "--methods", "--modes", "--steps", "--batch-tokens", "--smoke", "--attn"):
        assert opt in text
