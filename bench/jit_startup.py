"""4 ranks starting a job with uncached and cached kernels (compile once per machine).

Run:  .venv/bin/python bench/jit_startup.py [--repeats 5] [-n 4]

Cases, interleaved, each a fresh ``mpiexec -n 4`` of bench/jit_startup_job.py, which
imports the three stencil kernels and calls each once:

* parcomp, cold cache: an empty NUMBA_CACHE_DIR; one rank compiles each kernel under the
  file lock, the other three load it from the cache;
* parcomp, warm cache: the cache left by the previous run;
* plain numba.njit(cache=True), cold cache: the baseline; all four ranks compile.

Reported: wall time of the whole ``mpiexec`` and the slowest rank's time from its first
import to all kernels ready; medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import MPIEXEC, machine

JOB = Path(__file__).resolve().parent / "jit_startup_job.py"


def once(n: int, mode: str, cache: str) -> tuple[float, float, int]:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache)
    t0 = time.perf_counter()
    out = subprocess.run(
        [str(MPIEXEC), "-n", str(n), sys.executable, str(JOB), mode],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    wall = time.perf_counter() - t0
    ready, compiled = out.stdout.split()
    return wall, float(ready), int(compiled)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("-n", type=int, default=4)
    args = parser.parse_args()
    results: dict[str, list[tuple[float, float, int]]] = {
        "parcomp, cold cache": [],
        "parcomp, warm cache": [],
        "plain numba, cold cache": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            cold = os.path.join(tmp, f"pc{r}")
            results["parcomp, cold cache"].append(once(args.n, "parcomp", cold))
            results["parcomp, warm cache"].append(once(args.n, "parcomp", cold))
            results["plain numba, cold cache"].append(
                once(args.n, "plain", os.path.join(tmp, f"nb{r}"))
            )
    print(f"machine: {machine()}")
    print(
        f"{args.n} ranks start and get 3 kernels ready; median of {args.repeats} interleaved runs"
    )
    print(f"{'case':26s} {'job wall s':>10s} {'kernels ready s':>15s} {'compiles':>9s}")
    for name, runs in results.items():
        wall = statistics.median(w for w, _, _ in runs)
        ready = statistics.median(r for _, r, _ in runs)
        comp = statistics.median(c for _, _, c in runs) if name.startswith("parcomp") else "n/a"
        print(f"{name:26s} {wall:10.2f} {ready:15.2f} {comp!s:>9s}")


if __name__ == "__main__":
    main()
