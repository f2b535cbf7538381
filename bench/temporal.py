"""Several steps per exchange (run_stencil(steps=k)) against one sweep per step.

Run:  .venv/bin/python bench/temporal.py [--quick]

Same-command ratios, medians of interleaved repeats (bench/temporal_worker.py does the
timing inside each job, over the steps only):

* heat2d 4096^2, 1 rank: parcomp steps=k against the bare @numba.njit sweep, one per step
  (the one-sweep-per-step rate; goal >= 1.5x);
* heat2d 4096^2, 2 ranks: against hand-written mpi4py slabs (goal >= 1.5x), and the halo
  messages per step (goal: k times fewer);
* heat3d 256^3 (7-point), 1 rank: against bare Numba (goal >= 1.3x);
* a table of the rate over k and the tile size T (rows per tile; columns whole).

The number of steps is sized from the machine's speed so each timed run lasts about a
second; a run that timed nothing (fewer steps than k) fails.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from _common import BIN, MPIEXEC, machine, median

HERE = Path(__file__).resolve().parent
WORKER = HERE / "temporal_worker.py"


def job(ranks: int, *args: object) -> dict:
    argv = [str(MPIEXEC), "-n", str(ranks), str(BIN / "python"), str(WORKER), *map(str, args)]
    out = subprocess.run(argv, check=True, capture_output=True, text=True, timeout=900).stdout
    return json.loads(out.strip().splitlines()[-1])


def sized_steps(ndim: int, n: int, k: int, seconds: float = 1.0) -> int:
    """Steps for about ``seconds`` of bare sweeps, a multiple of ``k`` (at least 2k)."""
    probe = job(1, "--impl", "bare", "--ndim", ndim, "--n", n, "--steps", 4)
    per_step = probe["seconds"] / 4
    steps = max(2 * k, int(seconds / per_step))
    return steps - steps % k


def compare(cases: dict[str, tuple[int, list[object]]], repeats: int) -> dict[str, dict]:
    """Run each case ``repeats`` times, interleaved; median seconds and the last result."""
    samples: dict[str, list[float]] = {name: [] for name in cases}
    last: dict[str, dict] = {}
    for _ in range(repeats):
        for name, (ranks, args) in cases.items():
            result = job(ranks, *args)
            samples[name].append(result["seconds"])
            last[name] = result
    return {name: {**last[name], "median_s": median(samples[name])} for name in cases}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, no k x T table")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    repeats = 3 if args.quick else args.repeats
    print(f"machine: {machine()}")
    k = 16
    failures = []

    # ---- 2-D, 1 rank and 2 ranks
    n = 4096
    steps = sized_steps(2, n, k)
    common = ["--ndim", 2, "--n", n, "--steps", steps]
    res = compare(
        {
            "bare": (1, ["--impl", "bare", *common]),
            "steps1": (1, ["--impl", "steps", "--k", k, *common]),
            "hand2": (2, ["--impl", "hand", *common]),
            "plain2": (2, ["--impl", "steps", "--k", 1, "--tile", 0, *common]),
            "steps2": (2, ["--impl", "steps", "--k", k, *common]),
        },
        repeats,
    )
    r1 = res["bare"]["median_s"] / res["steps1"]["median_s"]
    r2 = res["hand2"]["median_s"] / res["steps2"]["median_s"]
    m1, mk = res["plain2"]["messages_per_step"], res["steps2"]["messages_per_step"]
    print(f"heat2d {n}^2, {steps} steps, k={k}, default tiles, medians of {repeats}:")
    for name, r in res.items():
        print(
            f"  {name:7s} {r['median_s']:.3f} s  {n * n * steps / r['median_s'] / 1e9:.3f} Gcell/s"
        )
    print(f"  1 rank:  steps=k / bare Numba one sweep per step = {r1:.2f}x (goal >= 1.5)")
    print(f"  2 ranks: steps=k / hand-written mpi4py slabs      = {r2:.2f}x (goal >= 1.5)")
    print(f"  2 ranks: messages per step {m1:.3f} (k=1) -> {mk:.4f} (k={k}): {m1 / mk:.1f}x fewer")
    if not mk or steps < k:
        failures.append("the 2-rank run sent no message: nothing was measured")

    # ---- 3-D, 1 rank
    n3, k3 = 256, 16
    steps3 = sized_steps(3, n3, k3, seconds=1.5)
    common3 = ["--ndim", 3, "--n", n3, "--steps", steps3]
    cases3 = {"bare3": (1, ["--impl", "bare", *common3])}
    # whole planes (C-contiguous views) against planes cut along axis 1 too (layout 'A')
    for kk, tile in ((4, [16, 0, 0]), (8, [16, 0, 0]), (16, [16, 0, 0]), (16, [16, 32, 0])):
        name = f"k{kk}-T{'x'.join(map(str, tile))}"
        cases3[name] = (1, ["--impl", "steps", "--k", kk, "--tile", *tile, *common3])
    cases3["k16-default"] = (1, ["--impl", "steps", "--k", 16, *common3])
    res3 = compare(cases3, repeats)
    print(f"heat3d {n3}^3 (7-point), {steps3} steps, medians of {repeats}:")
    base3 = res3["bare3"]["median_s"]
    best3 = max(base3 / r["median_s"] for name, r in res3.items() if name != "bare3")
    for name, r in res3.items():
        print(
            f"  {name:12s} {r['median_s']:.3f} s  {n3**3 * steps3 / r['median_s'] / 1e9:.3f} "
            f"Gcell/s  {base3 / r['median_s']:.2f}x bare"
        )

    print(f"  best steps=k / bare Numba = {best3:.2f}x (goal >= 1.3)")

    # ---- k x T table, 2-D 1 rank
    if not args.quick:
        print(f"heat2d {n}^2 1 rank, Gcell/s over k (rows) and T (rows per tile), one run each:")
        tiles = [4, 8, 16, 32, 64, 0]
        print("  k \\ T " + "".join(f"{('whole' if t == 0 else t)!s:>8}" for t in tiles))
        bare = res["bare"]["median_s"]
        for kk in (2, 4, 8, 16, 32):
            row = []
            for t in tiles:
                r = job(1, "--impl", "steps", "--k", kk, "--tile", t, 0, *common)
                row.append(f"{n * n * steps / r['seconds'] / 1e9:8.3f}")
            print(f"  {kk:5d} " + "".join(row))
        print(f"  (bare Numba: {n * n * steps / bare / 1e9:.3f} Gcell/s)")
    if failures:
        print("FAILED: " + "; ".join(failures))
        sys.exit(1)


if __name__ == "__main__":
    main()
