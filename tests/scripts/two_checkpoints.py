"""Write checkpoints of steps 30 and 60 of a (13, 11) array (tests of hostile checkpoints).

Step 30 holds f(i, j) = 100 i + j, step 60 holds f + 1000; each rank also saves a per-rank
array ``tag``: rank + 1 values equal to rank + step.  Usage: two_checkpoints.py DIR
"""

import sys

import numpy as np

import parcomp
from parcomp.arrays.array import DistArray
from parcomp.checkpoint import Checkpointer

ck = Checkpointer(sys.argv[1], keep=5, handle_signals=False)
u = DistArray.fromfunction(lambda i, j: 100.0 * i + j, (13, 11), halo=1, periods=(True, False))
r = parcomp.rank()
ck.save(30, arrays={"u": u}, scalars={"t": 3.0}, local={"tag": np.full(r + 1, r + 30.0)})
u.interior[...] += 1000.0
ck.save(60, arrays={"u": u}, scalars={"t": 6.0}, local={"tag": np.full(r + 1, r + 60.0)})
ck.close()
parcomp.get_logger("test").info("wrote steps 30 and 60")
