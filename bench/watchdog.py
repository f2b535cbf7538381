"""What the no-silent-failures checks and the hang watchdog cost in the heat2d step loop.

Run:  .venv/bin/python bench/watchdog.py [--n 4096] [--steps 60] [--repeats 5] [--base REV]

Same command, same machine, interleaved repeats, medians.  Each case is its own
``mpiexec -n 2 python <tree>/bench/heat2d_worker.py --impl parcomp`` (jobs/heat2d.py's
simulate: DistArray, exchange_halos, run_stencil with the declared heat_step_2d kernel):

  before            the code at --base (default: the last commit before this work), from a
                    git worktree in a temporary folder
  now               this tree, launched as a plain mpiexec job (no watchdog)
  now + watchdog    this tree with PARCOMP_WATCHDOG_DIR set, as under `parcomp run`
                    (heartbeat per collective call, faulthandler registered)
  now + debug       PARCOMP_DEBUG_COLLECTIVES=1 as well (one Allgather per collective call;
                    a debugging mode, reported, not held to the 2 % budget)

The budget: "now + watchdog" within 2 % of "before".  A case that timed nothing fails.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import MPIEXEC, ROOT, machine, worktree

BASE = "eb70a00"  # main before the no-silent-failures work (issue 12)


def run_case(tree: Path, env_extra: dict[str, str], args: argparse.Namespace) -> dict:
    env = dict(os.environ, **env_extra)
    env["PYTHONPATH"] = str(tree)
    out = subprocess.run(
        [
            str(MPIEXEC),
            "-n",
            "2",
            sys.executable,
            str(tree / "bench" / "heat2d_worker.py"),
            "--impl",
            "parcomp",
            "--n",
            str(args.n),
            "--steps",
            str(args.steps),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tree,
        timeout=900,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"case failed in {tree}:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--base", default=BASE)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="parcomp-bench-watchdog-") as tmp:
        folder = Path(tmp)
        before = worktree(args.base, folder)
        beats = folder / "beats"
        beats.mkdir()
        cases = {
            f"before ({args.base})": (before, {}),
            "now": (ROOT, {}),
            "now + watchdog": (ROOT, {"PARCOMP_WATCHDOG_DIR": str(beats)}),
            "now + debug": (
                ROOT,
                {"PARCOMP_WATCHDOG_DIR": str(beats), "PARCOMP_DEBUG_COLLECTIVES": "1"},
            ),
        }
        rates: dict[str, list[float]] = {name: [] for name in cases}
        try:
            for _ in range(args.repeats):
                for name, (tree, extra) in cases.items():
                    result = run_case(tree, extra, args)
                    if not result.get("seconds", 0) > 0:
                        raise SystemExit(f"{name}: timed nothing ({result}); raise --steps")
                    rates[name].append(result["gcells"])
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before)],
                check=False,
                capture_output=True,
            )
    print(f"machine: {machine()}")
    print(f"heat2d {args.n}^2, {args.steps} steps, 2 ranks, {args.repeats} interleaved repeats")
    base = statistics.median(rates[f"before ({args.base})"])
    print(f"{'case':24s} {'median Gcell/s':>15s} {'ratio':>7s}  all runs")
    for name, values in rates.items():
        med = statistics.median(values)
        runs = " ".join(f"{v:.3f}" for v in values)
        print(f"{name:24s} {med:15.3f} {med / base:7.3f}  {runs}")
    ratio = statistics.median(rates["now + watchdog"]) / base
    verdict = "within" if ratio >= 0.98 else "OUTSIDE"
    print(f"now + watchdog / before = {ratio:.3f}: {verdict} the 2 % budget")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
