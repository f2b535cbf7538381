"""Save a (40, 30) array to DIR/field.h5 again and again (kill tests of save_hdf5).

Usage: save_loop.py DIR COUNT.  Prints "saved K" after each save (rank 0).
"""

import sys
from pathlib import Path

import parcomp
from parcomp.arrays.array import DistArray

folder, count = Path(sys.argv[1]), int(sys.argv[2])
u = DistArray.fromfunction(lambda i, j: 100.0 * i + j, (40, 30))
for k in range(count):
    u.interior[...] += 1.0 if k else 0.0
    parcomp.save_hdf5(folder / "field.h5", {"u": u}, attrs={"k": k})
    if u.rank == 0:
        print("saved", k, flush=True)
