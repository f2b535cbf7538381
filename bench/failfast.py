"""Time from an unhandled exception on one rank to the end of the whole job.

Run:  .venv/bin/python bench/failfast.py [--repeats 9] [-n 3]

Rank 1 writes ``time.time()`` to a file immediately before raising; the others wait in a
barrier.  The time is from that stamp to the moment ``mpiexec`` (or ``parcomp run``) has
exited, as seen by this process.  Baseline: the same script without parcomp imported (no
fail-fast hook), killed by the launcher timeout.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import BIN, MPIEXEC, ROOT, machine, median

SCRIPT = ROOT / "tests" / "scripts" / "raise_on_rank.py"


def once(argv: list[str], stamp: Path, timeout: float = 60) -> float:
    stamp.unlink(missing_ok=True)
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    end = time.time()
    if proc.returncode == 0:
        raise RuntimeError(f"job unexpectedly succeeded: {argv}")
    return end - float(stamp.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("-n", type=int, default=3, help="ranks")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        stamp = Path(tmp) / "stamp"
        plain = [str(MPIEXEC), "-n", str(args.n), sys.executable, str(SCRIPT), "1", str(stamp)]
        run = [str(BIN / "parcomp"), "run", "-n", str(args.n), str(SCRIPT), "1", str(stamp)]
        results: dict[str, list[float]] = {"plain mpiexec": [], "parcomp run": []}
        for _ in range(args.repeats):
            results["plain mpiexec"].append(once(plain, stamp))
            results["parcomp run"].append(once(run, stamp))
        # baseline: same failure without the hook (PARCOMP_FAILFAST=0) -> the job hangs
        t0 = time.perf_counter()
        hang = subprocess.run(
            [str(BIN / "parcomp"), "run", "-n", str(args.n), "--timeout", "5", str(SCRIPT), "1"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PARCOMP_FAILFAST": "0"},
        )
        hang_time = time.perf_counter() - t0
    print(f"machine: {machine()}")
    print(f"exception on rank 1 of {args.n} -> job exit, median of {args.repeats} runs")
    for name, values in results.items():
        print(
            f"{name:16s} median {median(values) * 1e3:7.1f} ms  (min {min(values) * 1e3:.1f}, max {max(values) * 1e3:.1f})"
        )
    print(
        f"without the hook: exit status {hang.returncode} after {hang_time:.1f} s "
        "(hung until the 5 s launcher timeout)"
    )


if __name__ == "__main__":
    main()
