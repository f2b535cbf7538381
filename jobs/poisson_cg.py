"""Poisson's equation by conjugate gradients, matrix-free, bitwise the same on any rank count.

Run:  parcomp run -n 2 jobs/poisson_cg.py [--n 128] [--tol 1e-10]

Solves ``-laplace(u) = f`` on the unit square with ``u = 0`` on the boundary, on an
``n x n`` grid of interior points (``h = 1 / (n + 1)``), with the 5-point stencil as a
matrix-free operator (a declared ``parcomp.stencil`` kernel: halo exchange and checks by
``run_stencil``) and the DistArray algebra for the vector updates.

The exact solution is ``u = x (1 - x) y (1 - y)``, so ``f = 2 (x (1 - x) + y (1 - y))``.
The 5-point stencil is exact on it (second differences of quadratics are exact), so the
discrete solution *is* the exact one at the grid points: the printed error measures the
solver alone, and reaches the tolerance.

The dot products are exact (``deterministic=True``: correctly rounded sums), and
everything else is element-wise, so the whole iteration is the same bits on 1, 2, 3 or 4
ranks: the same iteration count and the same SHA-256 of the solution.  It checkpoints and
resumes like heat2d (``--checkpoint-dir``, ``--checkpoint-every``): the solver's state is
``x``, ``r``, ``p``, ``r.r`` and the iteration number.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import numpy as np

import parcomp
from parcomp import DistArray, run_stencil, stencil
from parcomp.io import dataset_sha256, save_hdf5

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the other jobs' helpers


@stencil(radius=1, reads=("p",), writes=("q",))
def apply_laplacian(p, q, inv_h2):
    """``q = -laplace(p)`` with the 5-point stencil (zero ghost cells: u = 0 outside)."""
    n0 = p.shape[0] - 1
    n1 = p.shape[1] - 1
    for i in range(1, n0):
        for j in range(1, n1):
            q[i, j] = (
                4.0 * p[i, j] - p[i - 1, j] - p[i + 1, j] - p[i, j - 1] - p[i, j + 1]
            ) * inv_h2


def exact(n: int):
    """The exact solution as a function of global indices."""
    h = 1.0 / (n + 1)

    def u(i: np.ndarray, j: np.ndarray) -> np.ndarray:
        x, y = (i + 1) * h, (j + 1) * h
        return x * (1 - x) * y * (1 - y)

    return u


def rhs(n: int):
    """``f = -laplace(u)`` for the exact solution."""
    h = 1.0 / (n + 1)

    def f(i: np.ndarray, j: np.ndarray) -> np.ndarray:
        x, y = (i + 1) * h, (j + 1) * h
        return 2.0 * (x * (1 - x) + y * (1 - y))

    return f


def solve(
    n: int,
    tol: float,
    maxiter: int,
    comm=None,
    checkpointer=None,
    deterministic: bool = True,
    progress: bool = False,
    fused: bool = True,
):
    """Conjugate gradients; returns ``(x, iterations, relative residual, seconds)``.

    Notes
    -----
    Collective over `comm`: call on all ranks.
    """
    log = parcomp.get_logger("parcomp.jobs.poisson_cg")
    inv_h2 = float((n + 1) ** 2)
    f = DistArray.fromfunction(rhs(n), (n, n), comm=comm)
    restored = (
        checkpointer.restore(require={"n": n, "tol": tol}) if checkpointer is not None else None
    )
    bnorm2 = f.dot(f, deterministic=deterministic)
    if restored is not None:
        x, r, p = (restored.arrays[k] for k in ("x", "r", "p"))
        rs, k0 = restored.scalars["rs"], restored.scalars["k"]
        log.info("resumed at iteration %d on %d ranks", k0, x.partition.size)
    else:
        x = f.zeros_like()
        r = f.copy()
        p = DistArray.zeros((n, n), halo=1, comm=comm)  # read with ghosts by the stencil
        p.interior[...] = r.interior
        rs, k0 = r.dot(r, deterministic=deterministic), 0
    q = p.zeros_like()  # written by the kernel at the same (halo) offsets as p
    t0 = time.perf_counter()
    k = k0
    while k < maxiter and rs > tol * tol * bnorm2:
        run_stencil(apply_laplacian, p, q, inv_h2)
        with parcomp.fused() if fused else contextlib.nullcontext():  # 3 passes, not 6
            alpha = rs / p.dot(q, deterministic=deterministic)
            x.axpy(alpha, p)
            r.axpy(-alpha, q)
            rs_new = r.dot(r, deterministic=deterministic)
            p *= rs_new / rs  # p = r + beta p, in place
            p += r
        rs, k = float(rs_new), k + 1
        if progress and k % 50 == 0:
            log.info("iteration %d: relative residual %.3e", k, np.sqrt(rs / bnorm2))
        if checkpointer is not None:
            checkpointer.checkpoint_if_due(
                k, arrays={"x": x, "r": r, "p": p}, scalars={"n": n, "tol": tol, "rs": rs, "k": k}
            )
    if checkpointer is not None:
        checkpointer.close()
    return x, k, float(np.sqrt(rs / bnorm2)), time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=128, help="interior points per side")
    parser.add_argument("--tol", type=float, default=1e-10, help="relative residual to reach")
    parser.add_argument("--maxiter", type=int, default=10000, help="iteration limit")
    parser.add_argument(
        "--fast-dots",
        action="store_true",
        help="plain floating-point dot products (faster; the last bits then depend on the "
        "rank count)",
    )
    parser.add_argument("--out", type=Path, default=Path("out/poisson_cg"), help="output folder")
    parser.add_argument("--checkpoint-dir", default=None, help="checkpoint/resume here")
    parser.add_argument("--checkpoint-every", type=int, default=None, help="every N iterations")
    args = parser.parse_args(argv)
    if args.n < 2 or not 0 < args.tol < 1:
        raise parcomp.ConfigError(f"--n must be >= 2 and 0 < --tol < 1, got {args.n}, {args.tol}")
    ckpt = None
    if args.checkpoint_dir is not None:
        from parcomp import Checkpointer

        ckpt = Checkpointer(args.checkpoint_dir, every=args.checkpoint_every)
    x, iterations, residual, seconds = solve(
        args.n,
        args.tol,
        args.maxiter,
        checkpointer=ckpt,
        deterministic=not args.fast_dots,
        progress=True,
    )
    error = (x - DistArray.fromfunction(exact(args.n), (args.n, args.n))).norm(np.inf)
    from grayscott import make_folder

    path = save_hdf5(make_folder(args.out, x.comm) / "poisson_cg.h5", {"u": x})  # no gather
    if x.rank == 0:
        print(
            f"poisson_cg {args.n}x{args.n} on {x.partition.size} ranks: {iterations} iterations, "
            f"relative residual {residual:.3e} in {seconds:.2f} s"
        )
        print(f"max |u - exact| = {error:.3e}")
        print(f"sha256 = {dataset_sha256(path, 'u')}")
        print(f"wrote {path}")
    if residual > args.tol:  # the same on every rank: every rank exits 1 with it
        parcomp.exit_all(
            1,
            f"poisson_cg: CG did not reach {args.tol:g} in {args.maxiter} iterations "
            f"(relative residual {residual:.3e})",
        )


if __name__ == "__main__":
    main()
