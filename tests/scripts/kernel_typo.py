"""A typo inside a user's kernel: reported once, in a few lines, for all ranks."""

import parcomp
from parcomp.arrays.array import DistArray


@parcomp.stencil(radius=1)
def smooth(u, out, alpha):
    for i in range(1, u.shape[0] - 1):
        out[i] = u[i] + alfa * (u[i - 1] - 2.0 * u[i] + u[i + 1])  # noqa: F821 - the typo


u = DistArray.zeros((32,), halo=1)
parcomp.run_stencil(smooth, u, u.zeros_like(), 0.25)
