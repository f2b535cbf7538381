"""The cost of checksummed, confined output files: bench/io.py now against bench/io.py of
the code before (a git worktree), alternately, in one command.

Run:  .venv/bin/python bench/io_versions.py [--base REV] [--rounds 3] [--ranks 2]

Each round runs ``bench/io.py --repeats 3`` once from the worktree at ``--base`` (the
main before issue 31's output checks) and once from this tree, under ``mpiexec -n
RANKS``, which goes first alternating.  Reported: the medians over the rounds of
``to_hdf5`` MiB/s (4096² float64: part files with slab checksums and placement now) and
of ``from_hdf5`` time (reading the parts confined and verified now, through HDF5's
virtual dataset before), and their ratios now/before (goal, issue 31: within 5 %).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import MPIEXEC, ROOT, machine, worktree

BASE = "689dc86"  # main before issue 31's output integrity and confinement


def run_io(tree: Path, ranks: int, out: Path) -> tuple[float, float]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    proc = subprocess.run(
        [str(MPIEXEC), "-n", str(ranks), sys.executable, str(tree / "bench" / "io.py"),
         "--repeats", "3", "--dir", str(out)],
        env=env, capture_output=True, text=True, timeout=900, cwd=tree,
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"bench/io.py failed in {tree}:\n{proc.stderr[-2000:]}")
    write = re.search(r"to_hdf5 4096\^2 float64:\s+([\d.]+) MiB/s", proc.stdout)
    read = re.search(r"\(([\d.]+) vs [\d.]+ ms; goal", proc.stdout)
    if write is None or read is None:
        raise SystemExit(f"bench/io.py printed no figures in {tree}:\n{proc.stdout}")
    return float(write.group(1)), float(read.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default=BASE)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ranks", type=int, default=2)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="parcomp-io-versions-"))
    before = worktree(args.base, folder)
    got: dict[str, list[tuple[float, float]]] = {"before": [], "now": []}
    try:
        for k in range(args.rounds):
            order = [("before", before), ("now", ROOT)]
            for name, tree in order if k % 2 == 0 else order[::-1]:
                got[name].append(run_io(tree, args.ranks, folder / f"out-{name}"))
    finally:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before)],
            capture_output=True,
        )
        shutil.rmtree(folder, ignore_errors=True)
    med = {
        name: (statistics.median(w for w, _ in rows), statistics.median(r for _, r in rows))
        for name, rows in got.items()
    }
    print(f"machine: {machine()}; {args.ranks} rank(s); medians of {args.rounds} rounds")
    print(f"  base: {args.base}")
    (wb, rb), (wn, rn) = med["before"], med["now"]
    print(
        f"  to_hdf5:   before {wb:8.1f} MiB/s  now {wn:8.1f} MiB/s  ratio now/before {wn / wb:.3f}"
    )
    print(
        f"  from_hdf5: before {rb:8.1f} ms     now {rn:8.1f} ms     ratio now/before {rn / rb:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
