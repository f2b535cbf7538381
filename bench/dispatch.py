"""Kernel dispatch overhead: a ``@parcomp.jit`` call against the bare Numba dispatcher.

Run:  .venv/bin/python bench/dispatch.py [--repeats 9] [--calls 20000]

The same compiled kernel (three arguments: two 8x8 arrays and a float, one store) is
called through the parcomp ``Kernel`` and through its own Numba dispatcher, interleaved,
in one process; medians of per-call times.  Goal (issue 14): at most 0.5 us more per call.
Prints a failure and exits 1 if a case measured nothing (a zero or negative time).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
from _common import machine

import parcomp


@parcomp.jit
def store(u, out, a):
    out[0, 0] = u[0, 0] * a


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--calls", type=int, default=20000)
    args = parser.parse_args()
    u, out = np.ones((8, 8)), np.zeros((8, 8))
    store(u, out, 0.5)  # compile (or load) outside the timing
    cases = {"bare Numba dispatcher": store.dispatcher, "parcomp Kernel": store}
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeats):
        for name, fn in cases.items():
            t = time.perf_counter()
            for _ in range(args.calls):
                fn(u, out, 0.5)
            samples[name].append((time.perf_counter() - t) / args.calls)
    med = {name: statistics.median(v) * 1e6 for name, v in samples.items()}
    print(f"machine: {machine()}")
    for name, us in med.items():
        print(f"  {name:24s} {us:6.3f} us per call (median of {args.repeats} x {args.calls})")
    extra = med["parcomp Kernel"] - med["bare Numba dispatcher"]
    print(f"parcomp overhead per call: {extra:.3f} us (goal <= 0.5 us)")
    if min(med.values()) <= 0:
        print("FAILED: a case measured nothing")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
