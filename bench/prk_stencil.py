"""PRK star stencil (radius 2): jobs/prk_stencil.py against a C + MPI reference.

Run:  .venv/bin/python bench/prk_stencil.py [--n 8192] [--repeats 3]

The reference (bench/prk_stencil.c, built here with the venv's mpicc -O3 -march=native)
is the PRK MPI1 scheme without temporal blocking: one halo exchange and one sweep per
iteration, then ``in += 1`` (gcc contracts its multiply-adds into FMAs by default).
parcomp runs the same arithmetic with ``--steps-per-exchange 1`` (one sweep per
iteration) and ``k`` (deep halo and cache tiles).  Both report the PRK rate (MFlop/s, 19 flops per active cell) over the
timed iterations; the ratio is parcomp's rate over C's, medians of interleaved repeats,
on 1 and 2 ranks.  The iterations are sized so that C's timed part lasts about a second.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import BIN, MPIEXEC, ROOT, machine, median

HERE = Path(__file__).resolve().parent


def build(folder: Path) -> Path:
    exe = folder / "prk_stencil_c"
    subprocess.run(
        [
            str(BIN / "mpicc"),
            "-O3",
            "-march=native",
            str(HERE / "prk_stencil.c"),
            "-o",
            str(exe),
            "-lm",
        ],
        check=True,
    )
    return exe


def run_c(exe: Path, ranks: int, n: int, iterations: int) -> tuple[float, float]:
    out = subprocess.run(
        [str(MPIEXEC), "-n", str(ranks), str(exe), str(n), str(iterations)],
        check=True,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if "ERROR" in out.stderr:
        raise SystemExit(f"C reference failed its verification: {out.stderr}")
    mflops, _, norm = out.stdout.split()
    return float(mflops), float(norm)


def run_parcomp(ranks: int, n: int, iterations: int, k: int) -> tuple[float, float]:
    out = subprocess.run(
        [
            str(BIN / "parcomp"),
            "run",
            "-n",
            str(ranks),
            "--timeout",
            "900",
            str(ROOT / "jobs" / "prk_stencil.py"),
            "--n",
            str(n),
            "--iterations",
            str(iterations),
            "--steps-per-exchange",
            str(k),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=960,
    )
    if "Solution validates" not in out.stdout:
        raise SystemExit(f"parcomp's PRK job failed its verification:\n{out.stdout}{out.stderr}")
    rate = float(re.search(r"Rate \(MFlops/s\): ([0-9.]+)", out.stdout).group(1))
    norm = float(re.search(r"L1 norm = ([0-9.e+-]+),", out.stdout).group(1))
    return rate, norm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8192)
    parser.add_argument("--k", type=int, default=16, help="iterations per exchange (blocked)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        exe = build(Path(tmp))
        probe, _ = run_c(exe, 1, args.n, 2)
        per_iter = 19 * (args.n - 4) ** 2 / (probe * 1e6)
        iterations = max(2 * args.k, int(1.0 / per_iter))
        iterations -= iterations % args.k
        print(f"PRK star r=2, {args.n}^2, {iterations} timed iterations, medians of {args.repeats}")
        for ranks in (1, 2):
            rates: dict[str, list[float]] = {
                "C+MPI": [],
                "parcomp k=1": [],
                f"parcomp k={args.k}": [],
            }
            norms = set()
            for _ in range(args.repeats):
                r, nm = run_c(exe, ranks, args.n, iterations)
                rates["C+MPI"].append(r)
                norms.add(nm)
                for k in (1, args.k):
                    r, nm = run_parcomp(ranks, args.n, iterations, k)
                    rates[f"parcomp k={k}"].append(r)
                    norms.add(nm)
            c = median(rates["C+MPI"])
            print(f"  {ranks} rank(s):")
            for name, values in rates.items():
                m = median(values)
                print(f"    {name:13s} {m:9.1f} MFlop/s  {m / c:.2f}x C+MPI")
            print(f"    L1 norms (all runs): {sorted(norms)}")
            if len(norms) != 1:
                print("FAILED: the runs' norms differ")
                sys.exit(1)


if __name__ == "__main__":
    main()
