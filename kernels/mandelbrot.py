"""Mandelbrot escape-time kernel (PURE: one image row per call)."""

from __future__ import annotations

import numpy as np

from parcomp.runtime.numba_jit import jit

__all__ = ["mandelbrot_row", "mandelbrot_numpy"]


@jit
def mandelbrot_row(y, width, x0, x1, max_iter):
    """Escape iteration counts of one row at imaginary part ``y`` (``width`` points in [x0, x1])."""
    out = np.empty(width, np.int32)
    step = (x1 - x0) / (width - 1) if width > 1 else 0.0
    for j in range(width):
        cr = x0 + j * step
        zr = 0.0
        zi = 0.0
        n = 0
        while n < max_iter and zr * zr + zi * zi <= 4.0:
            zr, zi = zr * zr - zi * zi + cr, 2.0 * zr * zi + y
            n += 1
        out[j] = n
    return out


def mandelbrot_numpy(ys: np.ndarray, width: int, x0: float, x1: float, max_iter: int) -> np.ndarray:
    """NumPy version of the whole image (rows ``ys``), for tests."""
    xs = x0 + np.arange(width) * ((x1 - x0) / (width - 1) if width > 1 else 0.0)
    c = xs[None, :] + 1j * np.asarray(ys)[:, None]
    zr = np.zeros(c.shape)
    zi = np.zeros(c.shape)
    counts = np.zeros(c.shape, np.int32)
    active = np.ones(c.shape, bool)
    for _ in range(max_iter):
        active &= zr * zr + zi * zi <= 4.0
        if not active.any():
            break
        nzr = np.where(active, zr * zr - zi * zi + c.real, zr)
        nzi = np.where(active, 2.0 * zr * zi + c.imag, zi)
        zr, zi = nzr, nzi
        counts += active
    return counts
