"""heat2d throughput: parcomp against bare Numba, hand-written mpi4py, NumPy and C, same run.

Run:  .venv/bin/python bench/heat2d.py [--n 4096] [--steps 100] [--repeats 5]

Every case is a separate ``mpiexec -n R python bench/heat2d_worker.py --impl X`` (C: a
binary built here with gcc -O3 -march=native), timed inside the job over the steps only
(after a warm-up step that compiles).  Cases are interleaved; medians of the repeats; ratios
from those medians.  1-rank cases leave the second core idle.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import MPIEXEC, machine

HERE = Path(__file__).resolve().parent
CASES = [
    ("C -O3 (1 core)", None, 1),
    ("numba-bare", "numba-bare", 1),
    ("parcomp", "parcomp", 1),
    ("mpi4py-hand", "mpi4py-hand", 2),
    ("parcomp", "parcomp", 2),
    ("numpy", "numpy", 1),
]


def build_c(folder: Path) -> Path | None:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        return None
    exe = folder / "heat2d_c"
    subprocess.run(
        [gcc, "-O3", "-march=native", str(HERE / "heat2d.c"), "-o", str(exe)], check=True
    )
    return exe


def run_case(
    impl: str | None, ranks: int, args: argparse.Namespace, c_exe: Path | None
) -> dict | None:
    steps = max(5, args.steps // 5) if impl == "numpy" else args.steps
    if impl is None:
        if c_exe is None:
            return None
        out = subprocess.run(
            [str(c_exe), str(args.n), str(steps)],
            capture_output=True,
            text=True,
            check=True,
            timeout=600,
        )
        return {"gcells": float(out.stdout.split()[0]), "halo_seconds": 0.0, "seconds": 1.0}
    argv = [
        str(MPIEXEC),
        "-n",
        str(ranks),
        sys.executable,
        str(HERE / "heat2d_worker.py"),
        "--impl",
        impl,
        "--n",
        str(args.n),
        "--steps",
        str(steps),
    ]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=600)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    samples: dict[tuple[str, int], list[dict]] = {(name, r): [] for name, _, r in CASES}
    with tempfile.TemporaryDirectory() as tmp:
        c_exe = build_c(Path(tmp))
        for _ in range(args.repeats):
            for name, impl, ranks in CASES:
                result = run_case(impl, ranks, args, c_exe)
                if result is not None:
                    samples[(name, ranks)].append(result)
    med = {
        key: statistics.median(s["gcells"] for s in runs) for key, runs in samples.items() if runs
    }
    print(f"machine: {machine()}")
    print(
        f"heat2d {args.n}x{args.n} float64, {args.steps} steps (numpy: {max(5, args.steps // 5)}), "
        f"median of {args.repeats} interleaved runs"
    )
    print(f"{'case':18s} {'ranks':>5s} {'Gcell/s':>8s} {'min':>7s} {'max':>7s} {'halo share':>10s}")
    for (name, ranks), runs in samples.items():
        if not runs:
            continue
        g = [s["gcells"] for s in runs]
        share = statistics.median(s["halo_seconds"] / s["seconds"] for s in runs)
        print(
            f"{name:18s} {ranks:5d} {med[(name, ranks)]:8.3f} {min(g):7.3f} {max(g):7.3f} {100 * share:9.1f}%"
        )
    ex = [s["exchange_median_s"] for s in samples[("parcomp", 2)]]
    print(f"parcomp 1 rank / numba-bare:        {med[('parcomp', 1)] / med[('numba-bare', 1)]:.3f}")
    print(
        f"parcomp 2 ranks / mpi4py-hand:      {med[('parcomp', 2)] / med[('mpi4py-hand', 2)]:.3f}"
    )
    print(
        f"parcomp 2 ranks / parcomp 1 rank:   {med[('parcomp', 2)] / med[('parcomp', 1)]:.3f} "
        f"(strong-scaling efficiency {med[('parcomp', 2)] / med[('parcomp', 1)] / 2:.2f})"
    )
    print(
        f"mpi4py-hand 2 / numba-bare 1:       {med[('mpi4py-hand', 2)] / med[('numba-bare', 1)]:.3f}"
    )
    print(f"numpy / numba-bare:                 {med[('numpy', 1)] / med[('numba-bare', 1)]:.3f}")
    if ("C -O3 (1 core)", 1) in med:
        print(
            f"numba-bare / C -O3:                 {med[('numba-bare', 1)] / med[('C -O3 (1 core)', 1)]:.3f}"
        )
    print(
        f"one halo exchange, 2 ranks (2 x {args.n * 8 // 1024} KiB): median {statistics.median(ex) * 1e6:.0f} us"
    )


if __name__ == "__main__":
    main()
