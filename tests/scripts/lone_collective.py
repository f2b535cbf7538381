"""A user's mistakes with collectives (issue 24), chosen by argv[1]:

* ``max``: rank 0 logs ``u.max()`` every 5 steps while every rank calls ``u.sum()``
  (was: rank 0 printed a wrong maximum, 3075.07 for a field below 3, then the job hung on
  2 ranks or died in "Message truncated" on 3);
* ``count``: ``p.count()`` on rank 0 only (was: an MPICH fatal error, status 142, no
  Python traceback);
* ``finish``: rank 0 skips the last ``u.sum()`` and finishes (was: the others waited
  forever without ``--timeout``).
"""

import sys

import numpy as np

import parcomp
from parcomp.arrays.array import DistArray

case = sys.argv[1]
u = DistArray.fromfunction(lambda i, j: np.sin(0.1 * i) + np.cos(0.2 * j), (24, 20), halo=1)
if case == "max":
    for step in range(12):
        if u.rank == 0 and step % 5 == 0:
            print("max", u.max(), flush=True)
        total = u.sum()
    print("done", total)
elif case == "count":
    from parcomp.particles.dist import DistParticles

    p = DistParticles(u, {"x": np.full((2, 2), 1.0)}, box=[(0, 24), (0, 20)])
    if u.rank == 0:
        print("particles", p.count(), flush=True)
    print("sum", u.sum())
elif case == "finish":
    if u.rank != 0:
        u.sum()
elif case in ("mapper", "set", "algebra", "decl"):
    if case == "mapper":
        parcomp.map_reduce(lambda i: 1 / 0, range(10), "sum")
    elif case == "set":
        parcomp.map(lambda s: s, {"a", "b", "c"})
    elif case == "algebra":
        u + DistArray.zeros((24, 20), periods=True)
    else:

        @parcomp.stencil(radius=1, corners=False)
        def diagonal(v, out):
            for i in range(1, v.shape[0] - 1):
                for j in range(1, v.shape[1] - 1):
                    out[i, j] = v[i - 1, j - 1]
