"""The keyed shuffle within a memory budget: peak memory and time against no budget.

Run:  .venv/bin/python bench/shuffle_budget.py [-n 2] [--records 1000000] [--repeats 3]

Each rank shuffles ``--records`` distinct int64 keys (16-byte records: 16 MB per rank at
the default), once without a budget and with budgets of 1/10, 1/40 and 1/160 of the
shuffle.  Reported per case (the worst rank, medians of the repeats): the peak RSS above
what the rank holds before and after the shuffle (its result included), against the
2 B + constant the budget allows, and the time as a ratio to no budget, measured in the
same run.  Fails (exit 1) if a budgeted peak exceeds 2 B + 8 MiB.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from _common import MPIEXEC, machine

WORKER = Path(__file__).resolve().parent / "shuffle_budget_worker.py"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2, help="ranks")
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    shuffle = 16 * args.records
    budgets = [shuffle // 10, shuffle // 40, shuffle // 160]
    cmd = [str(MPIEXEC), "-n", str(args.n), sys.executable, str(WORKER), str(args.records),
           str(args.repeats), "none", *map(str, budgets)]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=900)
    data = json.loads(out.stdout.strip().splitlines()[-1])["results"]
    base = data["none"]
    print(f"machine: {machine()}")
    print(f"{args.n} ranks, {args.records:,} records of 16 B per rank ({shuffle / 1e6:.0f} MB)\n")
    print(
        "| budget B | peak - before | after - before (the result) | peak above before "
        "and after | 2 B + 8 MiB | time | vs no budget |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(
        f"| none | {base['high'] / 1e6:.1f} MB | {base['grew'] / 1e6:.1f} MB | "
        f"{base['peak'] / 1e6:.1f} MB | - | {base['seconds']:.3f} s | 1.00 |"
    )
    failed = False
    for b in budgets:
        r = data[str(b)]
        allowed = 2 * b + (8 << 20)
        failed |= r["peak"] > allowed
        print(
            f"| {b / 1e6:.2f} MB (1/{shuffle // b}) | {r['high'] / 1e6:.1f} MB | "
            f"{r['grew'] / 1e6:.1f} MB | {r['peak'] / 1e6:.1f} MB | {allowed / 1e6:.1f} MB | "
            f"{r['seconds']:.3f} s | {r['seconds'] / base['seconds']:.2f} |"
        )
    if failed:
        print("FAILED: a peak exceeded 2 B + 8 MiB", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
