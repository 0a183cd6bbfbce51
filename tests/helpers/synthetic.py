"""Synthetic curated examples for the transactions demo task (tests and the benchmark).

Rows match schemas/ddl/0001_curation.sql ``examples`` and can be inserted directly.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

from kernel.similarity import exact_hash, normalise

LABELS = ["groceries", "transport", "dining", "rent", "utilities"]
WORDS = {
    "groceries": ["supermarket", "grocery store", "fresh produce", "bakery", "butcher", "market"],
    "transport": ["train ticket", "bus fare", "taxi ride", "metro card", "fuel station", "parking"],
    "dining": ["restaurant", "cafe", "pizza", "sushi bar", "burger", "coffee shop"],
    "rent": ["monthly rent", "landlord", "apartment lease", "housing payment", "flat rent", "tenancy"],
    "utilities": ["electricity bill", "water bill", "gas supply", "internet provider", "phone plan", "power company"],
}
COUNTRIES = ["DE", "FR", "US", "GB"]
MERCHANTS = ["Acme", "Nova", "Blue", "Metro", "Sun", "Prime", "City", "Star"]


def text_for(label: str, rng: random.Random) -> str:
    return (f"{rng.choice(MERCHANTS)} {rng.choice(WORDS[label])} payment "
            f"{rng.randint(1, 999)}.{rng.randint(0, 99):02d} EUR ref {rng.randint(1000, 9999)}")


def examples(n: int, task: str = "transactions", seed: int = 0, start: datetime | None = None,
             countries=COUNTRIES) -> list[dict]:
    rng = random.Random(seed)
    start = start or datetime(2025, 1, 1, tzinfo=timezone.utc)
    rows = []
    for i in range(n):
        label = LABELS[i % len(LABELS)]
        ts = start + timedelta(seconds=i)
        s = ts.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        text = text_for(label, rng)
        rows.append({"id": f"{task}-ex-{seed}-{i:06d}", "ts": s, "task": task, "input": text,
                     "output": label, "slice": countries[i % len(countries)], "confidence": 0.95,
                     "teacher": "teacher-x", "meta": "{}", "input_hash": exact_hash(normalise(text)),
                     "source_partition": 0, "source_offset": i, "curated_at": s})
    return rows


def gold_lines(n: int, seed: int = 99, countries=COUNTRIES, teacher_wrong_every: int = 0) -> list[dict]:
    """Gold examples (import_gold lines) with a teacher_output on each row."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        label = LABELS[i % len(LABELS)]
        teacher = label
        if teacher_wrong_every and i % teacher_wrong_every == 0:
            teacher = LABELS[(i + 1) % len(LABELS)]
        out.append({"id": f"g{i:05d}", "input": "gold " + text_for(label, rng), "output": label,
                    "slice": countries[i % len(countries)], "teacher_output": teacher})
    return out
