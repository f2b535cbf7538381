"""One job of bench/scale_startup.py: imports, then the first kernel through run_stencil.

Prints one line of JSON on rank 0: the slowest rank's seconds from the start of this
script to the end of its imports and to its first kernel's result, and the kernels
compiled and loaded from a cache, summed over the ranks.
"""

import time

t0 = time.perf_counter()
import h5py  # noqa: E402, F401
import numba  # noqa: E402, F401
import numpy as np  # noqa: E402

import parcomp  # noqa: E402
from parcomp.arrays.array import DistArray  # noqa: E402
from parcomp.kernels import heat_step_2d  # noqa: E402

imported = time.perf_counter() - t0
u = DistArray.fromfunction(lambda i, j: np.sin(i + 0.5 * j), (256, 256), halo=1)
v = u.zeros_like()
parcomp.run_stencil(heat_step_2d, u, v, 0.1)
ready = time.perf_counter() - t0
comm = u.comm
stats = np.array([heat_step_2d.compiled, heat_step_2d.loaded], np.int64)
total = np.zeros_like(stats)
comm.Reduce(stats, total)
times = comm.gather((imported, ready))
if comm.rank == 0:
    import json

    print(
        json.dumps(
            {
                "import_s": max(t[0] for t in times),
                "first_kernel_s": max(t[1] for t in times),
                "compiled": int(total[0]),
                "loaded": int(total[1]),
            }
        )
    )
