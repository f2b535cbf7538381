"""What resumable maps cost: ``checkpoint=`` against the same map without, one command.

Run:  .venv/bin/python bench/map_resume.py [--repeats 7] [--ranks 2]

One ``mpiexec -n RANKS`` job (``bench/map_resume_worker.py``) interleaves each map with and
without commits (every repeat starts from an empty progress folder, so it computes
everything): 100 tasks x 10 ms committed every 2 s (map_reduce; 0.5 s of work, so the
one commit is the last round's), 1,000 such tasks (5 s: commits by time, then the last),
10,000 tiny tasks (x*x)
and 10,000 tasks of 50 us committed every 1,000 items (map); then the time of a call that
resumes 10,000 committed items.  Medians.  A case that made no commit fails the run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from _common import MPIEXEC, machine

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--ranks", type=int, default=2)
    args = parser.parse_args()
    argv = [str(MPIEXEC), "-n", str(args.ranks), sys.executable,
            str(HERE / "map_resume_worker.py"), str(args.repeats)]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        sys.exit(proc.stderr[-3000:])
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"# {machine()}, {args.ranks} ranks, medians of {args.repeats}")
    print("| work | without commits | with commits | commits | cost |")
    print("|---|---:|---:|---:|---:|")
    failed = False
    cases = (("medium", "every 2 s"), ("long", "every 2 s"), ("tiny", "every 1000"),
             ("small", "every 1000"))  # fmt: skip
    for work, label in cases:
        plain, ckpt = r[f"{work}/plain"], r[f"{work}/{label}"]
        saves = r["saves"].get(work, 0)
        failed |= saves < 1
        print(f"| {work} ({label}) | {plain * 1e3:.2f} ms | {ckpt * 1e3:.2f} ms | {saves:g} | "
              f"{(ckpt / plain - 1) * 100:+.1f} % ({(ckpt - plain) / max(saves, 1) * 1e3:.2f} ms per commit) |")  # fmt: skip
    print(f"resume of 10,000 committed items: {r['resume 10,000'] * 1e3:.1f} ms (goal < 500 ms)")
    print(
        f"one commit (Checkpointer.save, 3 kB per rank): {r['commit warm'] * 1e3:.2f} ms back to "
        f"back, {r['commit cold'] * 1e3:.2f} ms after 0.5 s of compute"
    )
    print(f"a bare 4 kB write + fsync (rank 0): {r['fsync warm'] * 1e3:.2f} ms back to back, "
          f"{r['fsync cold'] * 1e3:.2f} ms after 0.5 s idle")  # fmt: skip
    if failed:
        sys.exit("a case made no commit: it measured nothing")


if __name__ == "__main__":
    main()
