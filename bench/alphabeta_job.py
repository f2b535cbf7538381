"""Latency, bandwidth and allreduce cost between the ranks of this machine (2 ranks).

Prints JSON on rank 0: alpha (s per message: half a ping-pong round trip of 8 bytes),
beta (s per byte: from 4 MiB ping-pongs, latency removed), and the median time of an
8-byte Allreduce.  Medians of many repetitions.
"""

import json
import statistics
import time

import numpy as np
from mpi4py import MPI

comm = MPI.COMM_WORLD
rank = comm.rank
other = 1 - rank


def pingpong(nbytes: int, reps: int) -> float:
    buf = np.zeros(nbytes, np.uint8)
    times = []
    for _ in range(reps):
        comm.Barrier()
        t0 = time.perf_counter()
        if rank == 0:
            comm.Send(buf, other)
            comm.Recv(buf, other)
        else:
            comm.Recv(buf, other)
            comm.Send(buf, other)
        times.append((time.perf_counter() - t0) / 2)
    return statistics.median(times)


small = pingpong(8, 2000)
big_n = 4 << 20
big = pingpong(big_n, 60)
x = np.zeros(1)
y = np.zeros(1)
times = []
for _ in range(2000):
    comm.Barrier()
    t0 = time.perf_counter()
    comm.Allreduce(x, y)
    times.append(time.perf_counter() - t0)
allreduce = comm.allreduce(statistics.median(times), op=MPI.MAX)
if rank == 0:
    print(json.dumps({"alpha": small, "beta": (big - small) / big_n, "allreduce_8B": allreduce}))
