"""Scientific Numba kernels, installed as ``parcomp.kernels``.

PURE: kernels compute on local blocks and never communicate.
"""

__all__: list[str] = []
