"""The 2-D wave equation by leapfrog: three time levels, checked against exact solutions.

Run:  parcomp run -n 2 jobs/wave2d.py [--n 63] [--cfl 0.5] [--time 1.0] [--convergence]

Solves ``u_tt = c^2 (u_xx + u_yy)`` on the unit square with ``u = 0`` on the walls, on
``n x n`` interior points (``h = 1 / (n + 1)``), by the leapfrog scheme
``u[t+1] = 2 u[t] - u[t-1] + (c dt / h)^2 lap(u[t])``.  The kernel
(``parcomp.kernels.wave_step``) reads ``u`` with ghost cells and ``u[t-1]`` only at the
cell it computes (declared ``pointwise``: never exchanged).

The start is the standing mode ``sin(p pi x) sin(q pi y)``.  Two exact solutions check it:

* **the scheme's own**: the mode is an eigenvector of the 5-point stencil, so the scheme
  gives exactly ``cos(w_h t) sin(p pi x) sin(q pi y)`` with
  ``cos(w_h dt) = 1 - 2 (c dt / h)^2 (sin^2(p pi h / 2) + sin^2(q pi h / 2))``.  The job
  starts from the scheme's exact first two levels, so the difference is round-off only;
* **the PDE's**: ``cos(w t)`` with ``w = c pi sqrt(p^2 + q^2)``; the scheme's frequency
  differs by O(h^2) at a fixed ``cfl``, so the error falls 4x when ``h`` halves.
  ``--convergence`` also runs ``2 n + 1`` points (half the spacing) and prints the order.

It checkpoints and resumes like heat2d (``--checkpoint-dir``, ``--checkpoint-every``).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

import parcomp
from parcomp import DistArray, run_stencil
from parcomp.io import dataset_sha256, save_hdf5
from parcomp.kernels import wave_step

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the other jobs' helpers


def mode(n: int, p: int, q: int):
    """``sin(p pi x) sin(q pi y)`` as a function of global indices (``x = (i + 1) h``)."""
    h = 1.0 / (n + 1)

    def f(i: np.ndarray, j: np.ndarray) -> np.ndarray:
        return np.sin(p * math.pi * (i + 1) * h) * np.sin(q * math.pi * (j + 1) * h)

    return f


def frequencies(n: int, c: float, dt: float, p: int, q: int) -> tuple[float, float]:
    """(the scheme's angular frequency of the mode, the PDE's)."""
    h = 1.0 / (n + 1)
    s = (c * dt / h) ** 2 * (
        math.sin(p * math.pi * h / 2) ** 2 + math.sin(q * math.pi * h / 2) ** 2
    )
    return math.acos(1.0 - 2.0 * s) / dt, c * math.pi * math.hypot(p, q)


def plan(n: int, c: float, cfl: float, final_time: float) -> tuple[int, float]:
    """Steps and time step reaching ``final_time`` exactly with ``c dt / h <= cfl``."""
    h = 1.0 / (n + 1)
    steps = max(1, math.ceil(final_time * c / (cfl * h)))
    return steps, final_time / steps


def simulate(
    n: int,
    c: float,
    cfl: float,
    final_time: float,
    p: int = 1,
    q: int = 1,
    comm=None,
    checkpointer=None,
    progress: bool = False,
    stop_at: int | None = None,
):
    """Leapfrog to ``final_time``; returns ``(u, errors, steps, seconds)``.

    ``errors`` maps ``"scheme"`` and ``"pde"`` to the max-norm difference from each exact
    solution at the final time (``None`` if stopped early at step ``stop_at``, with its
    checkpoint taken, to be resumed by a later run).  Collective over `comm`.
    """
    log = parcomp.get_logger("parcomp.jobs.wave2d")
    steps, dt = plan(n, c, cfl, final_time)
    w_h, w = frequencies(n, c, dt, p, q)
    c2 = (c * dt * (n + 1)) ** 2
    shape = (n, n)
    require = {"n": n, "c": c, "cfl": cfl, "time": final_time, "p": p, "q": q}
    restored = checkpointer.restore(require=require) if checkpointer is not None else None
    if restored is not None:
        uold, u = restored.arrays["uold"], restored.arrays["u"]
        start = restored.scalars["step"]
        if start > steps or (stop_at is not None and stop_at <= start):
            # the same on every rank: the restored manifest is agreed
            raise parcomp.ConfigError(
                f"the checkpoint is at step {start}; this run would end at step "
                f"{steps if stop_at is None else min(steps, stop_at)}: nothing to do"
            )
        log.info("resumed at step %d on %d ranks", start, u.partition.size)
    else:
        shape_fn = mode(n, p, q)
        uold = DistArray.fromfunction(shape_fn, shape, halo=1, comm=comm)  # t = 0
        u = DistArray.fromfunction(
            lambda i, j: math.cos(w_h * dt) * shape_fn(i, j), shape, halo=1, comm=comm
        )  # t = dt, the scheme's exact second level
        start = 1
    unew = u.zeros_like()
    t0 = time.perf_counter()
    last = steps if stop_at is None else min(steps, stop_at)
    for step in range(start + 1, last + 1):
        run_stencil(wave_step, uold, u, unew, c2)
        uold, u, unew = u, unew, uold
        if progress and step % max(steps // 10, 1) == 0:
            log.info("step %d/%d", step, steps)
        if checkpointer is not None:
            state = {"uold": uold, "u": u}
            scalars = {**require, "step": step}
            if step == last < steps:
                checkpointer.save(step, arrays=state, scalars=scalars)  # stopped early
            else:
                checkpointer.checkpoint_if_due(step, arrays=state, scalars=scalars)
    seconds = time.perf_counter() - t0
    if checkpointer is not None:
        checkpointer.close()
    if last < steps:
        return u, None, last, seconds
    t = steps * dt
    shape_fn = mode(n, p, q)
    errors = {
        "scheme": (
            u
            - DistArray.fromfunction(
                lambda i, j: math.cos(w_h * t) * shape_fn(i, j), shape, comm=comm
            )
        ).norm(np.inf),
        "pde": (
            u
            - DistArray.fromfunction(
                lambda i, j: math.cos(w * t) * shape_fn(i, j), shape, comm=comm
            )
        ).norm(np.inf),
    }
    return u, errors, steps, seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=63, help="interior points per side (default 63)")
    parser.add_argument("--c", type=float, default=1.0, help="wave speed (default 1)")
    parser.add_argument("--cfl", type=float, default=0.5, help="c dt / h, <= 1/sqrt(2)")
    parser.add_argument("--time", type=float, default=1.0, help="final time (default 1)")
    parser.add_argument("--p", type=int, default=1, help="mode number along x")
    parser.add_argument("--q", type=int, default=2, help="mode number along y")
    parser.add_argument(
        "--convergence", action="store_true", help="also run 2n+1 points and print the order"
    )
    parser.add_argument("--out", type=Path, default=Path("out/wave2d"), help="output folder")
    parser.add_argument("--checkpoint-dir", default=None, help="checkpoint/resume here")
    parser.add_argument("--checkpoint-every", type=int, default=None, help="every N steps")
    parser.add_argument(
        "--stop-at-step",
        type=int,
        default=None,
        help="stop after this step with a checkpoint (needs --checkpoint-dir); rerun to resume",
    )
    args = parser.parse_args(argv)
    if not all(math.isfinite(v) for v in (args.c, args.cfl, args.time)):
        raise parcomp.ConfigError("--c, --cfl and --time must be finite numbers")
    if args.stop_at_step is not None and args.stop_at_step < 2:
        raise parcomp.ConfigError("--stop-at-step must be >= 2 (steps 0 and 1 are the start)")
    if 2 * max(args.p, args.q) > args.n:
        raise parcomp.ConfigError(
            f"modes --p {args.p} --q {args.q} need --n >= {2 * max(args.p, args.q)} points "
            "to be resolved (at p = n + 1 the mode is zero at every point)"
        )
    if args.n < 3 or args.c <= 0 or args.time <= 0 or args.p < 1 or args.q < 1:
        raise parcomp.ConfigError("--n >= 3, --c > 0, --time > 0, --p >= 1 and --q >= 1 needed")
    if not 0 < args.cfl <= 1 / math.sqrt(2):
        raise parcomp.ConfigError(f"--cfl must be in (0, 1/sqrt(2)] for stability, got {args.cfl}")
    if args.stop_at_step is not None and args.checkpoint_dir is None:
        raise parcomp.ConfigError("--stop-at-step needs --checkpoint-dir (to resume from)")
    ckpt = None
    if args.checkpoint_dir is not None:
        from parcomp import Checkpointer

        ckpt = Checkpointer(args.checkpoint_dir, every=args.checkpoint_every)
    common = dict(c=args.c, cfl=args.cfl, final_time=args.time, p=args.p, q=args.q)
    u, errors, steps, seconds = simulate(
        args.n, checkpointer=ckpt, progress=True, stop_at=args.stop_at_step, **common
    )
    if errors is None:
        if u.rank == 0:
            print(f"wave2d: stopped at step {steps} with a checkpoint; run again to resume")
        return
    from grayscott import make_folder

    path = save_hdf5(make_folder(args.out, u.comm) / "wave2d.h5", {"u": u})  # no gather
    if u.rank == 0:
        print(
            f"wave2d {args.n}x{args.n} on {u.partition.size} ranks: {steps} steps to "
            f"t = {args.time:g} in {seconds:.2f} s"
        )
        print(f"max |u - scheme's exact| = {errors['scheme']:.3e}")
        print(f"max |u - PDE's exact|    = {errors['pde']:.3e}")
        print(f"sha256 = {dataset_sha256(path, 'u')}")
        print(f"wrote {path}")
    if args.convergence:
        fine = 2 * args.n + 1
        _, fine_errors, _, _ = simulate(fine, **common)
        if u.rank == 0:
            order = math.log2(errors["pde"] / fine_errors["pde"])
            print(
                f"n = {fine}: max |u - PDE's exact| = {fine_errors['pde']:.3e}; "
                f"observed order {order:.3f} (2 expected)"
            )


if __name__ == "__main__":
    main()
