"""Stencil kernels on local blocks with ghost cells (one cell wide).

PURE: no communication.  Each kernel reads ``u`` (interior plus ghost cells) and writes the
interior of ``out``; ghost cells of ``out`` are left alone.  Each is declared with
:func:`parcomp.stencil` (radius 1; ``life_step`` also reads corners), so
:func:`parcomp.run_stencil` refuses arrays without ghost cells and exchanges corners for
``life_step`` by itself.  The arithmetic is written in
the same order as the NumPy references in the tests, and Numba does not reassociate or
contract it (no ``fastmath``), so results are bitwise identical to NumPy and to any rank
count.
"""

from __future__ import annotations

import numpy as np

from parcomp import stencil

__all__ = [
    "heat_step_2d",
    "heat_step_3d",
    "life_step",
    "heat_step_2d_numpy",
    "heat_step_3d_numpy",
    "life_step_numpy",
]


@stencil(radius=1, corners=False)
def heat_step_2d(u, out, alpha):
    """One explicit step of the 2-D heat equation (5-point stencil).

    ``out[i, j] = u[i, j] + alpha * (u[i-1, j] + u[i+1, j] + u[i, j-1] + u[i, j+1] - 4 u[i, j])``
    for every interior cell; ``alpha = kappa * dt / dx**2`` (stable for ``alpha <= 0.25``).
    """
    n0 = u.shape[0] - 1
    n1 = u.shape[1] - 1
    for i in range(1, n0):
        for j in range(1, n1):
            c = u[i, j]
            out[i, j] = c + alpha * (
                u[i - 1, j] + u[i + 1, j] + u[i, j - 1] + u[i, j + 1] - 4.0 * c
            )


@stencil(radius=1, corners=False)
def heat_step_3d(u, out, alpha):
    """One explicit step of the 3-D heat equation (7-point stencil; stable for ``alpha <= 1/6``)."""
    n0 = u.shape[0] - 1
    n1 = u.shape[1] - 1
    n2 = u.shape[2] - 1
    for i in range(1, n0):
        for j in range(1, n1):
            for k in range(1, n2):
                c = u[i, j, k]
                out[i, j, k] = c + alpha * (
                    u[i - 1, j, k]
                    + u[i + 1, j, k]
                    + u[i, j - 1, k]
                    + u[i, j + 1, k]
                    + u[i, j, k - 1]
                    + u[i, j, k + 1]
                    - 6.0 * c
                )


@stencil(radius=1, corners=True)
def life_step(u, out):
    """One generation of Conway's Game of Life on int8 cells (9-point stencil: needs corners)."""
    n0 = u.shape[0] - 1
    n1 = u.shape[1] - 1
    for i in range(1, n0):
        for j in range(1, n1):
            alive = (
                u[i - 1, j - 1]
                + u[i - 1, j]
                + u[i - 1, j + 1]
                + u[i, j - 1]
                + u[i, j + 1]
                + u[i + 1, j - 1]
                + u[i + 1, j]
                + u[i + 1, j + 1]
            )
            out[i, j] = 1 if alive == 3 or (alive == 2 and u[i, j] == 1) else 0


# ---------------------------------------------------------------------------- NumPy references
def heat_step_2d_numpy(u: np.ndarray, out: np.ndarray, alpha: float) -> None:
    """NumPy-slicing version of :func:`heat_step_2d` (same arithmetic order)."""
    c = u[1:-1, 1:-1]
    out[1:-1, 1:-1] = c + alpha * (
        u[:-2, 1:-1] + u[2:, 1:-1] + u[1:-1, :-2] + u[1:-1, 2:] - 4.0 * c
    )


def heat_step_3d_numpy(u: np.ndarray, out: np.ndarray, alpha: float) -> None:
    """NumPy-slicing version of :func:`heat_step_3d` (same arithmetic order)."""
    c = u[1:-1, 1:-1, 1:-1]
    out[1:-1, 1:-1, 1:-1] = c + alpha * (
        u[:-2, 1:-1, 1:-1]
        + u[2:, 1:-1, 1:-1]
        + u[1:-1, :-2, 1:-1]
        + u[1:-1, 2:, 1:-1]
        + u[1:-1, 1:-1, :-2]
        + u[1:-1, 1:-1, 2:]
        - 6.0 * c
    )


def life_step_numpy(u: np.ndarray, out: np.ndarray) -> None:
    """NumPy-slicing version of :func:`life_step`."""
    alive = sum(
        u[1 + di : u.shape[0] - 1 + di, 1 + dj : u.shape[1] - 1 + dj].astype(np.int64)
        for di in (-1, 0, 1)
        for dj in (-1, 0, 1)
        if di or dj
    )
    centre = u[1:-1, 1:-1]
    out[1:-1, 1:-1] = ((alive == 3) | ((alive == 2) & (centre == 1))).astype(u.dtype)
