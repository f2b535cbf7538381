"""Soak test: many heat2d runs, each with a random rank SIGKILLed at a random step.

Run:  .venv/bin/python bench/soak.py [--trials 20] [--seed 1]

Every trial must finish under ``parcomp run --restarts 2`` with the SHA-256 of an
uninterrupted run; prints one line per trial and a summary (exit status 1 on any mismatch).
"""

from __future__ import annotations

import argparse
import random
import re
import subprocess
import sys
import tempfile
import time

from _common import BIN, ROOT

HEAT = ["jobs/heat2d.py", "--n", "128", "--steps", "120", "--no-png"]


def run(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "parcomp"), "run", *map(str, argv)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rnd = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        ref = run(["-n", "2", *HEAT, "--out", tmp])
        want = re.search(r"sha256 = (\w+)", ref.stdout).group(1)
        bad = 0
        for trial in range(args.trials):
            ranks = rnd.choice([2, 3, 4])
            step, victim, every = rnd.randint(2, 118), rnd.randrange(ranks), rnd.choice([5, 7, 13])
            t = time.perf_counter()
            proc = run(
                [
                    "-n",
                    ranks,
                    "--restarts",
                    "2",
                    "--timeout",
                    "240",
                    *HEAT,
                    "--out",
                    tmp,
                    "--checkpoint-dir",
                    f"{tmp}/ck{trial}",
                    "--checkpoint-every",
                    every,
                    "--die-at-step",
                    step,
                    "--die-rank",
                    victim,
                ]
            )
            got = re.search(r"sha256 = (\w+)", proc.stdout)
            ok = (
                proc.returncode == 0
                and got is not None
                and got.group(1) == want
                and "restart 1/2" in proc.stderr
            )
            bad += not ok
            print(
                f"trial {trial:3d}: {ranks} ranks, rank {victim} killed at step {step}, checkpoint every {every}: "
                f"{'ok' if ok else 'MISMATCH'} ({time.perf_counter() - t:.1f} s)",
                flush=True,
            )
    print(f"{args.trials - bad}/{args.trials} trials gave the uninterrupted result")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
