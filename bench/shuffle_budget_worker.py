"""One run of bench/shuffle_budget.py: the keyed shuffle with and without a budget.

Each rank builds a combined table of N distinct integer keys (overlapping between
ranks), then runs the shuffle (parcomp.mapreduce.shuffle.shuffle, the part a budget governs) with
no budget and with budgets B; per case the peak RSS above what the rank holds before and
after the shuffle (VmHWM, reset just before), and the time.  Prints JSON on rank 0:
per case, the largest peak and time over ranks (medians of the repeats).
"""

from __future__ import annotations

import json
import re
import statistics
import sys
import time

from mpi4py import MPI

from parcomp.mapreduce.shuffle import shuffle as _shuffle
from parcomp.runtime.reduce import resolve_op


def status() -> dict[str, int]:
    text = open("/proc/self/status").read()
    return {k: int(re.search(rf"{k}:\s+(\d+)", text).group(1)) * 1024 for k in ("VmRSS", "VmHWM")}


def main() -> None:
    n, repeats = int(sys.argv[1]), int(sys.argv[2])
    budgets = [None if b == "none" else int(b) for b in sys.argv[3:]]
    comm = MPI.COMM_WORLD
    lo = comm.rank * n // 2
    table = dict.fromkeys(range(lo, lo + n), 1)
    op = resolve_op("sum")
    _shuffle(dict(table), op, comm, None)  # warm
    results: dict[str, dict[str, float]] = {}
    for budget in budgets:
        peaks, times, highs, grown = [], [], [], []
        for _ in range(repeats):
            comm.Barrier()
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            before = status()["VmRSS"]
            t0 = time.perf_counter()
            got = _shuffle(table, op, comm, budget)
            seconds = time.perf_counter() - t0
            after = status()
            peaks.append(after["VmHWM"] - max(after["VmRSS"], before))
            highs.append(after["VmHWM"] - before)
            grown.append(after["VmRSS"] - before)
            times.append(seconds)
            del got
        peak = comm.allreduce(statistics.median(peaks), op=MPI.MAX)
        seconds = comm.allreduce(statistics.median(times), op=MPI.MAX)
        high = comm.allreduce(statistics.median(highs), op=MPI.MAX)
        grew = comm.allreduce(statistics.median(grown), op=MPI.MAX)
        results["none" if budget is None else str(budget)] = {
            "peak": peak,
            "seconds": seconds,
            "high": high,
            "grew": grew,
        }
    if comm.rank == 0:
        print(json.dumps({"records_per_rank": n, "results": results}))


if __name__ == "__main__":
    main()
