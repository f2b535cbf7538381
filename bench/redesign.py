"""Nothing slower after the redesign (issue 26): the six benchmarks of the hot paths, run
from a git worktree of the code before and from this tree, alternately, in one command.

Run:  .venv/bin/python bench/redesign.py [--base REV] [--rounds 3] [--only NAME ...]

Each round runs every benchmark once from the worktree at ``--base`` and once from this
tree (which goes first alternates), each tree's own ``bench/*.py`` (the same measurement,
written against that tree's module paths), with ``PYTHONPATH`` pointing at the tree.  The
figures each benchmark prints are parsed; reported are the medians over the rounds and the
ratio now/before, oriented so that > 1 means faster now (goal: every ratio within 3 %).
A benchmark that printed none of its figures fails the run.
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
from collections.abc import Callable
from pathlib import Path

from _common import MPIEXEC, ROOT, machine, worktree

BASE = "de93cba"  # main before issue 26's redesign

Figures = dict[str, tuple[float, bool]]  # label -> (value, higher is better)


def _dispatch(out: str) -> Figures:
    got = {}
    for name, us in re.findall(r"^\s+(.+?)\s+([\d.]+) us per call", out, re.M):
        got[f"{name} (us/call)"] = (float(us), False)
    return got


def _heat(out: str) -> Figures:
    got = {}
    for case, ranks, rate in re.findall(
        r"^(parcomp|numba-bare|mpi4py-hand)\s+(\d)\s+([\d.]+)", out, re.M
    ):
        got[f"{case} {ranks} rank(s) (Gcell/s)"] = (float(rate), True)
    return got


def _temporal(out: str) -> Figures:
    got = {}
    for name, rate in re.findall(
        r"^  (steps1|steps2|plain2|k16-default)\s+[\d.]+ s\s+([\d.]+) Gcell/s", out, re.M
    ):
        got[f"{name} (Gcell/s)"] = (float(rate), True)
    return got


def _cg(out: str) -> Figures:
    got = {}
    for n, hand, ours in re.findall(
        r"(\d+)\^2: hand-written\s+([\d.]+) us/iteration, parcomp\s+([\d.]+) us/iteration", out
    ):
        got[f"CG {n}^2 parcomp (us/iteration)"] = (float(ours), False)
        got[f"CG {n}^2 parcomp / hand-written"] = (float(ours) / float(hand), False)
    return got


def _redistribute(out: str) -> Figures:
    got = {}
    for case, ms in re.findall(r"^\| (alltoall[wv], [^|]+?) \| ([\d.]+) ms", out, re.M):
        got[f"redistribute {case} (ms)"] = (float(ms), False)
    return got


def _fft(out: str) -> Figures:
    got = {}
    for n, p, kind, ours in re.findall(
        r"^\| (\d+)³ \| (\d) \| (c2c|r2c) \| [\d.]+ ms \| [\d.]+ ms \| ([\d.]+) ms", out, re.M
    ):
        got[f"{kind} {n}^3 on {p} rank(s) (ms)"] = (float(ours), False)
    return got


def _overlap(out: str) -> Figures:
    got = {}
    for n, plain, over in re.findall(r"^\s*(\d+)\^2\s+([\d.]+) ms\s+([\d.]+) ms", out, re.M):
        got[f"plain step {n}^2/rank (ms)"] = (float(plain), False)
        got[f"overlapped step {n}^2/rank (ms)"] = (float(over), False)
    return got


#: name -> (argv after the interpreter, relative to the tree; under mpiexec -n?; parser)
BENCHES: dict[str, tuple[list[str], int, Callable[[str], Figures]]] = {
    "dispatch": (["bench/dispatch.py", "--repeats", "9"], 0, _dispatch),
    "heat2d 4096^2": (
        ["bench/heat2d.py", "--n", "4096", "--steps", "20", "--repeats", "3"],
        0,
        _heat,
    ),
    "heat2d 256^2": (
        ["bench/heat2d.py", "--n", "256", "--steps", "2000", "--repeats", "3"],
        0,
        _heat,
    ),
    "temporal": (["bench/temporal.py", "--quick"], 0, _temporal),
    "cg": (["bench/cg.py", "--repeats", "5"], 2, _cg),
    "redistribute": (["bench/redistribute.py", "--repeats", "9"], 0, _redistribute),
    "fft": (["bench/fft.py", "--repeats", "5", "--sizes", "128"], 0, _fft),
    "overlap": (["bench/overlap.py", "--repeats", "7"], 2, _overlap),
}


def run(tree: Path, name: str) -> Figures:
    argv, ranks, parse = BENCHES[name]
    cmd = [sys.executable, str(tree / argv[0]), *argv[1:]]
    if ranks:
        cmd = [str(MPIEXEC), "-n", str(ranks), *cmd]
    env = dict(os.environ, PYTHONPATH=str(tree))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800, cwd=tree)
    figures = parse(proc.stdout)
    if proc.returncode != 0 or not figures:
        raise SystemExit(
            f"{name} from {tree} measured nothing (exit {proc.returncode}):\n"
            f"{proc.stdout[-1500:]}\n{proc.stderr[-1500:]}"
        )
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default=BASE)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHES))
    args = parser.parse_args()
    names = args.only or list(BENCHES)
    folder = Path(tempfile.mkdtemp(prefix="parcomp-redesign-"))
    before = worktree(args.base, folder)
    got: dict[str, dict[str, list[float]]] = {"before": {}, "now": {}}
    better: dict[str, bool] = {}
    try:
        for k in range(args.rounds):
            for name in names:
                order = [("before", before), ("now", ROOT)]
                for side, tree in order if (k + names.index(name)) % 2 == 0 else order[::-1]:
                    for label, (value, higher) in run(tree, name).items():
                        got[side].setdefault(f"{name}: {label}", []).append(value)
                        better[f"{name}: {label}"] = higher
                print(f"round {k + 1}/{args.rounds}: {name} done", file=sys.stderr, flush=True)
    finally:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before)],
            capture_output=True,
        )
        shutil.rmtree(folder, ignore_errors=True)
    print(f"machine: {machine()}; medians of {args.rounds} rounds; before = {args.base}")
    print("| figure | before | now | speed now/before |")
    print("|---|---:|---:|---:|")
    worst = 1.0
    for label in sorted(set(got["before"]) & set(got["now"])):
        b, n = statistics.median(got["before"][label]), statistics.median(got["now"][label])
        speed = n / b if better[label] else b / n
        worst = min(worst, speed)
        print(f"| {label} | {b:.4g} | {n:.4g} | {speed:.3f} |")
    print(f"slowest ratio: {worst:.3f} (goal: >= 0.97)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
