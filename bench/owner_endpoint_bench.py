"""Insert throughput into the embedded store: in the owning process vs through the owner's
loopback endpoint (what the `up` worker child uses). Same store, batches of 5,000
curation_events rows, the two paths interleaved so machine noise hits both alike.

    PYTHONPATH=. python bench/owner_endpoint_bench.py [--batches 10] [--rows 5000]
Writes bench/results/owner_endpoint.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

from kernel.settings import load_settings
from kernel.warehouse import open_warehouse
from kernel.warehouse.migrate import apply_ddl
from kernel.warehouse.owner import OwnerServer
from kernel.warehouse.remote import RemoteWarehouse, read_owner


def rows(batch: int, n: int) -> list[dict]:
    return [{"id": f"b{batch}-{i}", "ts": "2026-11-21T10:00:00Z", "task": "transactions", "outcome": "kept",
             "reason": "", "slice": "GB", "label": "groceries", "confidence": 0.9, "teacher": "teacher-x",
             "input_hash": i, "matched_id": "", "source_partition": 0, "source_offset": i,
             "curated_at": "2026-11-21T10:00:01Z"} for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=10)
    ap.add_argument("--rows", type=int, default=5000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        s = load_settings({}, data_dir=Path(d))
        local = open_warehouse(s, own=True)
        apply_ddl(local)
        server = OwnerServer(local, s.data_dir).start()
        remote = RemoteWarehouse(read_owner(s.data_dir))
        times = {"in_process": [], "endpoint": []}
        for b in range(args.batches):
            for name, store in (("in_process", local), ("endpoint", remote)) if b % 2 else \
                    (("endpoint", remote), ("in_process", local)):
                batch = rows(b * 2 + (name == "endpoint"), args.rows)
                t0 = time.perf_counter()
                store.insert("curation_events", batch)
                times[name].append(time.perf_counter() - t0)
        server.stop()
        local.close()
    out = {name: {"rows_per_s": args.rows * len(t) / sum(t), "median_batch_ms": sorted(t)[len(t) // 2] * 1000}
           for name, t in times.items()}
    out["endpoint_over_in_process"] = out["endpoint"]["rows_per_s"] / out["in_process"]["rows_per_s"]
    out["config"] = {"batches": args.batches, "rows": args.rows, "cpus": __import__("os").cpu_count(),
                     "python": platform.python_version()}
    print(json.dumps(out, indent=2))
    res = Path(__file__).parent / "results"
    res.mkdir(exist_ok=True)
    (res / "owner_endpoint.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
