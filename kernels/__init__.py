"""Scientific Numba kernels, installed as ``parcomp.kernels``.

PURE: kernels compute on local blocks (interior plus ghost cells) and never communicate;
:func:`parcomp.run_stencil` exchanges the halos and calls them on every rank.
"""

from parcomp.kernels.kmeans import kmeans_stats, kmeans_stats_numpy
from parcomp.kernels.mandelbrot import mandelbrot_numpy, mandelbrot_row
from parcomp.kernels.particles import lj_forces, lj_forces_numpy
from parcomp.kernels.pde import gray_scott_numpy, gray_scott_step, wave_step, wave_step_numpy
from parcomp.kernels.prk import PRK_RADIUS, prk_star2, prk_star2_numpy
from parcomp.kernels.stencils import (
    heat_step_2d,
    heat_step_2d_numpy,
    heat_step_3d,
    heat_step_3d_numpy,
    life_step,
    life_step_numpy,
)

__all__ = [
    "heat_step_2d",
    "heat_step_3d",
    "life_step",
    "heat_step_2d_numpy",
    "heat_step_3d_numpy",
    "life_step_numpy",
    "kmeans_stats",
    "kmeans_stats_numpy",
    "mandelbrot_row",
    "mandelbrot_numpy",
    "gray_scott_step",
    "gray_scott_numpy",
    "wave_step",
    "wave_step_numpy",
    "prk_star2",
    "prk_star2_numpy",
    "PRK_RADIUS",
    "lj_forces",
    "lj_forces_numpy",
]
