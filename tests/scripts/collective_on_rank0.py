"""A user's mistake: a collective (u.sum()) inside `if rank == 0:` hangs the job."""

import parcomp
from parcomp.arrays.array import DistArray

u = DistArray.fromfunction(lambda i: i * 1.0, (24,), halo=1)
u.exchange_halos()
if parcomp.rank() == 0:
    print("total", u.sum())  # collective: the other ranks never call it
u.exchange_halos()
print("done")
