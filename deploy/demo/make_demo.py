"""Writes the demo data of the README tour: deploy/demo/teacher_logs.jsonl and gold.jsonl.

Deterministic (seeded): `python deploy/demo/make_demo.py` rewrites the same two files.

The demo is meant to be honest about teachers: a real one is wrong sometimes. So
  * the teacher's labels in the logs are wrong on about 6% of the rows (a random other label,
    often with a lower confidence), next to exact and near duplicates, low-confidence rows,
    off-label answers ("crypto"), a few gold overlaps and a few broken lines;
  * gold.jsonl carries the true ``output`` and the teacher's ``teacher_output``, which is wrong
    on 3 of the 30 rows of each slice (GB, DE, FR): the teacher baseline scores 0.90.
A student trained on the kept logs learns the majority label of each merchant, so it can beat
the teacher on gold: the tour ends with an approved model.
"""

from __future__ import annotations

import json
import random
import string
from datetime import datetime, timedelta, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
TASK = "transactions"
TEACHER = "teacher-large-2026-10"
MERCHANTS = {
    "groceries": ["TESCO STORES", "SAINSBURYS", "ALDI MARKT", "WAITROSE"],
    "transport": ["TFL TRAVEL", "SHELL", "UBER TRIP", "SNCF VOYAGES"],
    "dining": ["DELIVEROO", "PRET A MANGER", "STARBUCKS", "PIZZA EXPRESS"],
    "rent": ["LANDLORD LTD", "RENT PAYMENT", "LETTINGS AGENT"],
    "utilities": ["BRITISH GAS", "THAMES WATER", "NETFLIX.COM", "EDF ENERGY"],
    "shopping": ["AMAZON MKTPLACE", "ZARA", "IKEA", "JOHN LEWIS"],
    "income": ["ACME PAYROLL", "HMRC REFUND", "SALARY TRANSFER"],
    "other": ["POST OFFICE", "CHARITY DONATION", "ATM WITHDRAWAL"],
}
LABELS = list(MERCHANTS)
CITIES = ["LONDON", "LEEDS", "DUBLIN", "PARIS", "LYON", "BERLIN", "MUNICH", "MADRID", "ROME", "OSLO"]
COUNTRIES = ["GB", "DE", "FR"]


def line(rng: random.Random, merchant: str, ref: bool = True) -> str:
    s = f"{merchant} {rng.randint(1000, 99999)} {rng.choice(CITIES)} CARD {rng.randint(1000, 9999)}"
    if ref:
        s += " REF " + "".join(rng.choice(string.ascii_uppercase) for _ in range(8))
    return s


def wrong(rng: random.Random, label: str) -> str:
    return rng.choice([x for x in LABELS if x != label])


def gold(rng: random.Random) -> list[dict]:
    rows = []
    for c, country in enumerate(COUNTRIES):
        wrong_at = set(rng.sample(range(30), 3))  # the teacher is wrong on 10% of each slice
        for i in range(30):
            label = LABELS[(i + c) % len(LABELS)]
            out = {"id": f"gold-{country}-{i:02d}", "input": line(rng, rng.choice(MERCHANTS[label]), ref=False),
                   "output": label, "slice": country}
            out["teacher_output"] = wrong(rng, label) if i in wrong_at else label
            rows.append(out)
    return rows


def logs(rng: random.Random, gold_rows: list[dict], n: int = 600) -> list[str]:
    start = datetime(2026, 11, 21, 10, 0, tzinfo=timezone.utc)
    out: list[str] = []
    kept_inputs: list[str] = []
    for i in range(n):
        ts = (start + timedelta(seconds=i * 0.6)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        country = rng.choice(COUNTRIES)
        label = rng.choice(LABELS)
        text = line(rng, rng.choice(MERCHANTS[label]))
        output, conf = label, round(rng.uniform(0.75, 0.99), 3)
        r = rng.random()
        if r < 0.06:                       # the teacher is wrong, and a bit less sure
            output, conf = wrong(rng, label), round(rng.uniform(0.7, 0.9), 3)
        elif r < 0.11:                     # unsure: goes to review, never trains
            conf = round(rng.uniform(0.2, 0.69), 3)
        elif r < 0.13:                     # not a label of the task
            output = "crypto"
        elif r < 0.21 and kept_inputs:     # the same line again, in another case
            text = rng.choice(kept_inputs).lower()
        elif r < 0.25 and kept_inputs:     # nearly the same line
            text = rng.choice(kept_inputs)[:-2] + "ZZ"
        elif r < 0.255:                    # a gold example seen in production: never trains
            g = rng.choice(gold_rows)
            text, output = g["input"], g["output"]
        kept_inputs.append(text)
        out.append(json.dumps({"id": f"evt-{i:08d}", "ts": ts, "task": TASK, "input": text, "output": output,
                               "confidence": conf, "teacher": TEACHER,
                               "meta": {"country": country, "channel": "card",
                                        "request_ms": rng.randint(150, 900)},
                               "schema_version": 1}, separators=(",", ":")))
    for k in rng.sample(range(n), 8):      # broken lines: become dead letters
        out[k] = f'{{"id": "broken-{k}", "task": "{TASK}", "input": '
    return out


def main() -> None:
    rng = random.Random(12)
    g = gold(rng)
    (HERE / "gold.jsonl").write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in g))
    (HERE / "teacher_logs.jsonl").write_text("\n".join(logs(rng, g)) + "\n")


if __name__ == "__main__":
    main()
