"""The disk fills after the space check: a too-small reservation on a nearly full disk.

Usage: enospc_after_reservation.py DIR.  Step 1 fits; for step 2 the reservation is made
too small on purpose (as if another process took the space after it), so the shard write
itself hits ENOSPC.  Expected: a clean CheckpointError on every rank, step 1 intact,
the process alive (h5py 3.16 segfaults when HDF5 itself meets ENOSPC).
"""

import sys

import numpy as np

import parcomp
import parcomp.checkpoint.checkpointer as ckmod
from parcomp.arrays.array import DistArray
from parcomp.checkpoint import Checkpointer

ck = Checkpointer(sys.argv[1], keep=2, handle_signals=False)
small = DistArray.fromfunction(lambda i: i * 1.0, (4000,))
ck.save(1, arrays={"u": small})
ckmod.estimate_shard_bytes = lambda snap: 1024  # the reservation is now far too small
big = DistArray.fromfunction(lambda i: i * 2.0, (400_000,))  # 3.2 MB: cannot fit
try:
    ck.save(2, arrays={"u": big})
    print("saved?!")
except parcomp.CheckpointError as exc:
    print(f"clean error: {'No space left on device' in str(exc)}", flush=True)
back = ck.restore()
ok = back.step == 1 and np.array_equal(back.arrays["u"].interior, small.interior)
ck.close()
print(f"survived, step 1 intact: {ok}", flush=True)
