"""A 4-rank job's start: import the kernels and call each once (bench/jit_startup.py runs it)."""

import sys
import time

t0 = time.perf_counter()
import numpy as np  # noqa: E402
from mpi4py import MPI  # noqa: E402

mode = sys.argv[1]
if mode == "parcomp":
    from parcomp.kernels import heat_step_2d, heat_step_3d, life_step
else:  # the same kernels with plain numba.njit(cache=True): every rank compiles on its own
    import numba

    from parcomp.kernels import stencils

    heat_step_2d = numba.njit(cache=True)(stencils.heat_step_2d.py_func)
    heat_step_3d = numba.njit(cache=True)(stencils.heat_step_3d.py_func)
    life_step = numba.njit(cache=True)(stencils.life_step.py_func)

u2 = np.ones((16, 16))
u3 = np.ones((8, 8, 8))
g = np.ones((16, 16), np.int8)
heat_step_2d(u2, u2.copy(), 0.1)
heat_step_3d(u3, u3.copy(), 0.1)
life_step(g, g.copy())
compiled = sum(getattr(k, "compiled", 0) for k in (heat_step_2d, heat_step_3d, life_step))
ready = time.perf_counter() - t0
comm = MPI.COMM_WORLD
ready = comm.reduce(ready, op=MPI.MAX)
compiled = comm.reduce(compiled, op=MPI.SUM)
if comm.rank == 0:
    print(f"{ready:.4f} {compiled}")
