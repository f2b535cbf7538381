"""A parameter sweep of heat2d runs, each run itself parallel: an ensemble of MPI tasks.

Run:  parcomp run -n 4 jobs/sweep.py --ranks-per-task 2 --alphas 0.05,0.1,0.15,0.2,0.25
      parcomp run -n 4 jobs/sweep.py ... --out out/sweep     (resumes after a kill)

``parcomp.map(run_one, alphas, ranks_per_task=K, checkpoint=OUT/progress)``: the ranks are
split into groups of K; each group runs one heat2d simulation at a time (its DistArrays on
the group's communicator, checkpointing in ``OUT/runs/alpha-<a>/``) and the groups take
the parameter values dynamically.  A job killed or preempted and run again, on any rank
count that K divides, skips the runs committed and resumes the interrupted runs from their
own checkpoints.  Rank 0 writes one row per run to ``OUT/sweep.h5``: columns along the
dimension ``run`` (netCDF-4 style), so ``xarray.open_dataset(path)`` reads it and
``.to_dataframe()`` gives pandas a table; ``h5dump`` shows plain 1-D datasets.
"""

from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path

import numpy as np

import parcomp
from parcomp import Checkpointer, DistArray

try:
    from heat2d import exact_at, simulate
except ImportError:  # imported from elsewhere (tests): the jobs folder is this file's
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from heat2d import exact_at, simulate

COLUMNS = ("alpha", "error", "total", "ranks", "steps", "seconds")
UNITS = {"alpha": "1", "error": "1", "total": "1", "ranks": "1", "steps": "1", "seconds": "s"}
LONG = {
    "alpha": "kappa dt / dx^2 of the run",
    "error": "max |u - exact| after the last step",
    "total": "sum of u after the last step (deterministic)",
    "ranks": "ranks the run used",
    "steps": "time steps",
    "seconds": "wall time of the run's steps",
}


def run_one(alpha: float, comm, *, n: int, steps: int, out: str, every: int) -> dict:
    """One heat2d run on the task's group ``comm``; its row of the table."""
    folder = Path(out) / "runs" / f"alpha-{alpha:.6g}"
    ckpt = Checkpointer(folder, every=every, comm=comm)
    u, seconds, _halo, _ran = simulate(n, steps, alpha, comm=comm, checkpointer=ckpt)
    reference = DistArray.fromfunction(
        exact_at(n, steps, alpha), (n, n), dims=u.partition.dims, comm=comm
    )
    return {
        "alpha": alpha,
        "error": float((u - reference).norm(np.inf)),
        "total": float(u.sum(deterministic=True)),
        "ranks": comm.Get_size(),
        "steps": steps,
        "seconds": seconds,
    }


def write_table(rows: list[dict], path: Path, attrs: dict) -> None:
    """One row per run as 1-D columns along the dimension scale ``run`` (rank 0 only)."""
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".h5.tmp")
    with h5py.File(tmp, "w") as f:
        run = f.create_dataset("run", data=np.arange(len(rows), dtype=np.int64))
        run.make_scale("run")
        run.attrs["long_name"] = "run number"
        for name in COLUMNS:
            dtype = np.int64 if name in ("ranks", "steps") else np.float64
            column = f.create_dataset(name, data=np.array([r[name] for r in rows], dtype))
            column.dims[0].attach_scale(run)
            column.attrs["long_name"] = LONG[name]
            column.attrs["units"] = UNITS[name]
        for key, value in attrs.items():
            f.attrs[key] = value
    tmp.replace(path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--alphas", default="0.05,0.1,0.15,0.2,0.25", help="comma-separated alpha values"
    )
    parser.add_argument("--ranks-per-task", type=int, default=2, help="ranks of each run")
    parser.add_argument("--n", type=int, default=64, help="grid cells per side of each run")
    parser.add_argument("--steps", type=int, default=200, help="time steps of each run")
    parser.add_argument("--every", type=int, default=50, help="each run checkpoints every N steps")
    parser.add_argument("--out", type=Path, default=Path("out/sweep"), help="output folder")
    parser.add_argument("--progress", action="store_true", help="progress bar on rank 0")
    args = parser.parse_args(argv)
    try:
        alphas = [float(a) for a in args.alphas.split(",") if a.strip()]
    except ValueError as exc:
        raise parcomp.ConfigError(f"--alphas must be numbers separated by commas: {exc}") from exc
    bad = [a for a in alphas if not 0 < a <= 0.25]
    if not alphas or bad:
        raise parcomp.ConfigError(f"--alphas must be in (0, 0.25] for stability, got {bad}")
    task = functools.partial(
        run_one, n=args.n, steps=args.steps, out=str(args.out), every=args.every
    )
    t0 = time.perf_counter()
    rows = parcomp.map(
        task,
        alphas,
        ranks_per_task=args.ranks_per_task,
        checkpoint=args.out / "progress",
        every_items=1,
        progress=args.progress,
        root=0,
    )
    if rows is not None:
        path = args.out / "sweep.h5"
        attrs = {"title": f"heat2d sweep {args.n}x{args.n}, {args.steps} steps",
                 "Conventions": "CF-1.8"}  # fmt: skip
        write_table(rows, path, attrs)
        print(
            f"sweep: {len(rows)} runs of {args.ranks_per_task} rank(s) on {parcomp.size()} "
            f"ranks in {time.perf_counter() - t0:.2f} s; wrote {path}"
        )
        for row in rows:
            print(f"  alpha {row['alpha']:.4f}  max |u - exact| = {row['error']:.3e}  "
                  f"sum = {row['total']:.12e}")  # fmt: skip


if __name__ == "__main__":
    main()
