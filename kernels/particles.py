"""Short-range particle kernels (PURE): Lennard-Jones forces over owned particles and ghosts."""

from __future__ import annotations

import numpy as np

from parcomp.runtime.numba_jit import jit

__all__ = ["lj_forces", "lj_forces_numpy"]


@jit
def lj_forces(x, cand, rc2, shift, force, energy):
    """Lennard-Jones (epsilon = sigma = 1) forces on the particles ``x`` from ``cand``.

    ``cand`` holds every particle and ghost image that may be within the cutoff (``x``'s
    own rows among them), in a canonical order; ``force[i]`` and ``energy[i]`` (half of
    each pair's shifted potential ``4 (r^-12 - r^-6) - shift``) are sums over ``cand`` in
    that order, so they do not depend on how particles are split over ranks.  The pair
    with itself (distance 0) is skipped.
    """
    m, d = x.shape
    for i in range(m):
        e = 0.0
        for k in range(d):
            force[i, k] = 0.0
        for j in range(cand.shape[0]):
            r2 = 0.0
            for k in range(d):
                dx = x[i, k] - cand[j, k]
                r2 += dx * dx
            if r2 < rc2 and r2 > 0.0:
                inv2 = 1.0 / r2
                inv6 = inv2 * inv2 * inv2
                f = 24.0 * inv2 * inv6 * (2.0 * inv6 - 1.0)
                for k in range(d):
                    force[i, k] += f * (x[i, k] - cand[j, k])
                e += 0.5 * (4.0 * inv6 * (inv6 - 1.0) - shift)
        energy[i] = e


def lj_forces_numpy(x: np.ndarray, box: float, rc: float) -> tuple[np.ndarray, float]:
    """Serial NumPy reference: forces and total shifted potential with the minimum image."""
    dx = x[:, None, :] - x[None, :, :]
    dx -= box * np.round(dx / box)
    r2 = (dx * dx).sum(axis=2)
    np.fill_diagonal(r2, np.inf)
    inside = r2 < rc * rc
    inv6 = np.where(inside, 1.0 / r2**3, 0.0)
    f = np.where(inside, 24.0 / r2 * inv6 * (2.0 * inv6 - 1.0), 0.0)
    shift = 4.0 * (rc**-12 - rc**-6)
    e = np.where(inside, 4.0 * inv6 * (inv6 - 1.0) - shift, 0.0)
    return (f[:, :, None] * dx).sum(axis=1), 0.5 * float(e.sum())
