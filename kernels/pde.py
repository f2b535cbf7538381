"""Kernels of the multi-field PDE jobs: Gray-Scott reaction-diffusion and the wave equation.

PURE: kernels on local blocks with one ghost cell; :func:`parcomp.run_stencil` exchanges
the fields they read (in one message per neighbour) and calls them on every rank.  Each
has a NumPy reference written in the same order of operations; Numba does not reassociate
or contract without ``fastmath``, so the kernels give the NumPy reference's bits exactly,
on any rank count.
"""

from __future__ import annotations

import numpy as np

from parcomp import stencil

__all__ = ["gray_scott_step", "gray_scott_numpy", "wave_step", "wave_step_numpy"]


@stencil(radius=1, reads=("u", "v"), writes=("u2", "v2"))
def gray_scott_step(u, v, u2, v2, du, dv, f, k, dt):
    """One explicit Euler step of the Gray-Scott reaction-diffusion system (5-point).

    ``u' = du lap(u) - u v^2 + f (1 - u)`` and ``v' = dv lap(v) + u v^2 - (f + k) v``, with
    grid spacing 1 (``lap`` is the 5-point sum); reads ``u`` and ``v`` with ghost cells.
    """
    n0 = u.shape[0] - 1
    n1 = u.shape[1] - 1
    for i in range(1, n0):
        for j in range(1, n1):
            uc = u[i, j]
            vc = v[i, j]
            lu = u[i - 1, j] + u[i + 1, j] + u[i, j - 1] + u[i, j + 1] - 4.0 * uc
            lv = v[i - 1, j] + v[i + 1, j] + v[i, j - 1] + v[i, j + 1] - 4.0 * vc
            uvv = uc * vc * vc
            u2[i, j] = uc + dt * (du * lu - uvv + f * (1.0 - uc))
            v2[i, j] = vc + dt * (dv * lv + uvv - (f + k) * vc)


def gray_scott_numpy(
    U: np.ndarray, V: np.ndarray, du: float, dv: float, f: float, k: float, dt: float
) -> tuple[np.ndarray, np.ndarray]:
    """Serial NumPy reference of :func:`gray_scott_step` on a periodic global grid."""
    P, Q = np.pad(U, 1, mode="wrap"), np.pad(V, 1, mode="wrap")
    uc, vc = P[1:-1, 1:-1], Q[1:-1, 1:-1]
    lu = P[:-2, 1:-1] + P[2:, 1:-1] + P[1:-1, :-2] + P[1:-1, 2:] - 4.0 * uc
    lv = Q[:-2, 1:-1] + Q[2:, 1:-1] + Q[1:-1, :-2] + Q[1:-1, 2:] - 4.0 * vc
    uvv = uc * vc * vc
    return uc + dt * (du * lu - uvv + f * (1.0 - uc)), vc + dt * (dv * lv + uvv - (f + k) * vc)


@stencil(radius=1, reads=("u",), writes=("unew",), pointwise=("uold",))
def wave_step(uold, u, unew, c2):
    """One leapfrog step of the 2-D wave equation: three time levels.

    ``unew = 2 u - uold + c2 lap(u)`` with ``c2 = (c dt / h)^2``; reads ``u`` with ghost
    cells and ``uold`` only at the cell computed (declared ``pointwise``: not exchanged).
    """
    n0 = u.shape[0] - 1
    n1 = u.shape[1] - 1
    for i in range(1, n0):
        for j in range(1, n1):
            c = u[i, j]
            lap = u[i - 1, j] + u[i + 1, j] + u[i, j - 1] + u[i, j + 1] - 4.0 * c
            unew[i, j] = 2.0 * c - uold[i, j] + c2 * lap


def wave_step_numpy(Uold: np.ndarray, U: np.ndarray, c2: float) -> np.ndarray:
    """Serial NumPy reference of :func:`wave_step` with zero (Dirichlet) walls."""
    P = np.pad(U, 1)
    lap = P[:-2, 1:-1] + P[2:, 1:-1] + P[1:-1, :-2] + P[1:-1, 2:] - 4.0 * U
    return 2.0 * U - Uold + c2 * lap
