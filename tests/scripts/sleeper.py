"""Computes 'forever' (a user's long job, to be stopped with Ctrl-C)."""

import time

import parcomp
from parcomp.arrays.array import DistArray

u = DistArray.zeros((64,), halo=1)
print("started", flush=True) if parcomp.rank() == 0 else None
while True:
    u.exchange_halos()
    time.sleep(0.01)
