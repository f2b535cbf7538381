"""A spectral Poisson solve on a periodic 3-D box, with parcomp's distributed FFT.

Run:  parcomp run -n 2 jobs/poisson_fft.py [--n 64] [--dims 2,1,1]

Solves ``laplace(u) = f`` on the periodic box ``[0, 2 pi)^3`` on an ``n^3`` grid.  The
exact solution is ``u = sin(x) sin(2 y) cos(3 z) + 0.5 cos(x + y)``, so
``f = -14 sin(x) sin(2 y) cos(3 z) - cos(x + y)`` (both have zero mean, which a periodic
Poisson problem needs).  In Fourier space ``u_k = -f_k / |k|^2`` (and ``u_0 = 0``):
``rfftn`` of ``f``, a division by ``-|k|^2`` on each rank's block of wavenumbers
(:func:`parcomp.arrays.fft.frequencies`), and ``irfftn`` back to ``f``'s layout.  A spectral
method is exact on these trigonometric modes, so the printed error is at rounding level
(below ``1e-12`` for any ``n >= 8``) on any rank count; it is checked and the job exits
1 if it is not.  ``u`` is written to ``<out>/poisson_fft.h5`` (no gather).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

import parcomp
from parcomp import DistArray, fft, save_hdf5

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the other jobs' helpers

TOLERANCE = 1e-12


def exact(n: int):
    """The exact solution as a function of global indices."""
    h = 2 * np.pi / n

    def u(i: np.ndarray, j: np.ndarray, k: np.ndarray) -> np.ndarray:
        x, y, z = i * h, j * h, k * h
        return np.sin(x) * np.sin(2 * y) * np.cos(3 * z) + 0.5 * np.cos(x + y)

    return u


def rhs(n: int):
    """``f = laplace(u)`` for the exact solution."""
    h = 2 * np.pi / n

    def f(i: np.ndarray, j: np.ndarray, k: np.ndarray) -> np.ndarray:
        x, y, z = i * h, j * h, k * h
        return -14.0 * np.sin(x) * np.sin(2 * y) * np.cos(3 * z) - np.cos(x + y)

    return f


def solve(f: DistArray) -> DistArray:
    """``u`` with ``laplace(u) = f`` and zero mean, in ``f``'s layout (collective)."""
    shape = f.global_shape
    fk = fft.rfftn(f)
    kx, ky, kz = (
        2 * np.pi * q for q in fft.frequencies(fk, shape=shape, spacing=2 * np.pi / shape[0])
    )
    k2 = kx * kx + ky * ky + kz * kz
    with np.errstate(divide="ignore", invalid="ignore"):
        fk.interior[...] = np.where(k2 > 0, -fk.interior / k2, 0.0)
    return fft.irfftn(fk, s=shape, dims=f.partition.dims)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="grid points per side (>= 8)")
    parser.add_argument(
        "--dims", default=None, help="process grid of f, e.g. 2,1,1 (default: parcomp chooses)"
    )
    parser.add_argument("--out", type=Path, default=Path("out/poisson_fft"), help="output folder")
    args = parser.parse_args(argv)
    if args.n < 8:
        raise parcomp.ConfigError(f"--n must be >= 8, got {args.n}")
    dims = None if args.dims is None else tuple(int(d) for d in args.dims.split(","))
    n = args.n
    f = DistArray.fromfunction(rhs(n), (n, n, n), periods=True, dims=dims)
    t0 = time.perf_counter()
    u = solve(f)
    seconds = time.perf_counter() - t0
    error = (u - DistArray.fromfunction(exact(n), (n, n, n), periods=True, dims=dims)).norm(np.inf)
    from grayscott import make_folder

    path = save_hdf5(make_folder(args.out, u.comm) / "poisson_fft.h5", {"u": u})
    if u.rank == 0:
        print(
            f"poisson_fft {n}^3 on {u.partition.size} ranks (grid {u.partition.dims}): "
            f"solved in {seconds:.3f} s"
        )
        print(f"max |u - exact| = {error:.3e}")
        print(f"wrote {path}")
    if not error < TOLERANCE:  # the same on every rank (a reduction): every rank exits 1
        parcomp.exit_all(1, f"poisson_fft: error {error:.3e} is above {TOLERANCE:g}")


if __name__ == "__main__":
    main()
