"""A resumable map for the kill and preemption tests.

    parcomp run -n N tests/scripts/resumable.py KIND SIDE N_ITEMS EVERY [PROGRESS_DIR]

KIND is map, det (map_reduce deterministic=True), fold (map_reduce), keyed or shuffle
(keyed through a small shuffle budget).  Every call of the mapper is
written to ``SIDE/calls-<pid>``; rank 0 prints ``RESULT <text>``.  Without PROGRESS_DIR
the call is not checkpointed (the reference).  ``RESUMABLE_SLEEP`` (seconds per item);
``RESUMABLE_DIE_AT`` (items, comma-separated: the rank that runs one SIGKILLs itself, once).
"""

import math
import os
import signal
import sys
import time
from pathlib import Path

import parcomp

KIND, SIDE, N, EVERY = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
PROGRESS = sys.argv[5] if len(sys.argv) > 5 else None
SLEEP = float(os.environ.get("RESUMABLE_SLEEP", "0.01"))
#: The rank that runs one of these items dies, once per item (``SIDE/died-<item>``).
DIE_AT = {int(v) for v in os.environ.get("RESUMABLE_DIE_AT", "").split(",") if v}


def mapper(i: int):
    with open(SIDE / f"calls-{os.getpid()}", "a") as fh:
        fh.write(f"{i}\n")
    time.sleep(SLEEP)
    if i in DIE_AT and not (SIDE / f"died-{i}").exists():
        (SIDE / f"died-{i}").write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    if KIND == "keyed":
        return [(f"k{i % 7}", i), (i % 3, 1)]
    if KIND == "det":
        return math.sin(i) / (1.0 + i)
    if KIND == "fold":
        return i * i
    return {"i": i, "v": math.sin(i)}


options = {} if PROGRESS is None else {"checkpoint": PROGRESS, "every_items": EVERY}
if KIND == "map":
    out = parcomp.map(mapper, range(N), schedule="dynamic", **options)
    text = repr(out)
elif KIND == "det":
    out = parcomp.map_reduce(mapper, range(N), "sum", deterministic=True, **options)
    text = out.hex()
elif KIND == "fold":  # map_reduce, not deterministic: per-rank partials
    out = parcomp.map_reduce(mapper, range(N), "sum", **options)
    text = repr(out)
elif KIND == "shuffle":  # many keys through a small shuffle budget, committed by time
    shuffle = {"max_shuffle_bytes": 2048}
    if PROGRESS is not None:
        shuffle["every_seconds"] = 1e-6  # the map's rounds by items, the shuffle's by time

    def keys_of(i: int):
        mapper(i)
        return [(f"k{(i * 7919 + j) % 4001}", 1) for j in range(60)]

    out = parcomp.map_reduce_keyed(keys_of, range(N), "sum", **options, **shuffle)
    text = repr(sorted(out.items(), key=repr)) if out is not None else ""
else:
    out = parcomp.map_reduce_keyed(mapper, range(N), "sum", **options)
    text = repr(sorted(out.items(), key=repr)) if out is not None else ""
if parcomp.rank() == 0:
    print("RESULT", text, flush=True)
