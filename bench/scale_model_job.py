"""One measurement of bench/scale_model.py: set up, then run one parcomp path REPS times.

Run under bench/mpicount.c (LD_PRELOAD), once with REPS=0 and once with REPS>0: the
difference of the counts, divided by REPS, is what one call of the path costs each rank.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import parcomp
from parcomp.arrays.array import DistArray


def words(i: int) -> list[tuple[str, int]]:
    rng = np.random.default_rng(i)
    return [(f"w{int(k)}", 1) for k in rng.integers(0, 2000, 50)]


PATHS = (
    "halo exchange",
    "dot",
    "exact sum",
    "map_reduce deterministic",
    "map_reduce dynamic",
    "keyed shuffle",
    "checkpoint save",
    "checkpoint restore",
    "partner copies",
)


def main() -> None:
    """Every path in turn, each in its own counting section (``MPI_Pcontrol(2)`` starts
    the next one, ``MPI_Pcontrol(0)`` stops counting; see bench/mpicount.c)."""
    from mpi4py import MPI

    reps = int(sys.argv[1])
    folder = Path(sys.argv[2])
    size = parcomp.size()
    u = DistArray.fromfunction(lambda i, j: np.sin(i + 0.5 * j), (512, 512), halo=1)
    v = u.zeros_like()
    u.exchange_halos()  # build the plan outside the count
    items = range(100 * size)
    from parcomp.checkpoint import Checkpointer

    shared = Checkpointer(folder / "ck", keep=2, comm=u.comm)
    tiered = Checkpointer(folder / "ck2", keep=2, local_directory=folder / "local", comm=u.comm)
    shared.save(0, arrays={"u": u})
    tiered.save(0, arrays={"u": u})
    for path in PATHS:
        u.comm.Barrier()
        MPI.Pcontrol(2)  # the next section: PATHS.index(path) + 1
        for r in range(reps):
            if path == "halo exchange":
                u.exchange_halos()
            elif path == "dot":
                u.dot(v)
            elif path == "exact sum":
                u.sum(deterministic=True)
            elif path == "map_reduce deterministic":
                parcomp.map_reduce(float, items, "sum", deterministic=True)
            elif path == "map_reduce dynamic":
                parcomp.map_reduce(float, items, "sum", schedule="dynamic")
            elif path == "keyed shuffle":
                parcomp.map_reduce_keyed(words, items, root=None)
            elif path == "checkpoint save":
                shared.save(r + 1, arrays={"u": u})
                shared.wait()
            elif path == "checkpoint restore":
                shared.restore()
            elif path == "partner copies":
                tiered.save(r + 1, arrays={"u": u})
                tiered.wait()
        MPI.Pcontrol(0)
    shared.close()
    tiered.close()


if __name__ == "__main__":
    main()
