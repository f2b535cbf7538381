"""One communication pattern in a loop, for cutting links under it (tests/cluster).

Run:  parcomp run -n N --hosts ... ops.py OP [--rounds R] [--delay S] [--checkpoint-dir D]

OP is ``halo`` (heat steps: halo exchanges), ``checkpoint`` (a collective checkpoint to the
shared tier each round; the others checkpoint every 50 rounds), ``shuffle`` (a keyed map/reduce: an all-to-all of pairs) or
``redistribute`` (a 2-d array moved between decompositions).  Each round waits ``delay``
seconds, so a cut lands inside the loop.  Prints ``answer = <sha256>`` of a result that
is the same on any rank count (``gather`` on rank 0), and ``resumed at R`` when a
checkpoint was restored (``--checkpoint-dir``).
"""

from __future__ import annotations

import argparse
import hashlib
import time

import numpy as np

import parcomp
from parcomp import run_stencil
from parcomp.arrays.array import DistArray
from parcomp.checkpoint import Checkpointer
from parcomp.kernels import heat_step_2d

N = 192


def field() -> DistArray:
    return DistArray.fromfunction(lambda i, j: np.sin(0.1 * i) * np.cos(0.07 * j), (N, N), halo=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("op", choices=("halo", "checkpoint", "shuffle", "redistribute"))
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--delay", type=float, default=0.02)
    parser.add_argument("--checkpoint-dir", default=None)
    args = parser.parse_args()
    u = field()
    start = 0
    total = 0
    ck = None
    if args.checkpoint_dir:
        ck = Checkpointer(args.checkpoint_dir, keep=2)
        back = ck.restore()
        if back is not None:
            u = back.arrays["u"]
            start = int(back.scalars["round"])
            total = int(back.scalars["total"])
            if u.rank == 0:
                print(f"resumed at {start}", flush=True)
    v = None
    for r in range(start, args.rounds):
        time.sleep(args.delay)
        if args.op in ("halo", "checkpoint"):
            v = u.zeros_like() if v is None else v
            run_stencil(heat_step_2d, u, v, 0.2)
            u, v = v, u
        if args.op == "shuffle":
            counts = parcomp.map_reduce_keyed(
                lambda k, r=r: [(f"k{(k * 7919 + r) % 97}", k) for _ in range(3)], range(600),
                root=None,
            )  # fmt: skip
            total += int(parcomp.allreduce(sum(counts.values()), "sum"))
        elif args.op == "redistribute":
            dims = (u.partition.size, 1) if r % 2 == 0 else (1, u.partition.size)
            u = u.redistribute(dims=dims)
        if ck is not None and (args.op == "checkpoint" or (r + 1) % 50 == 0):
            ck.save(r + 1, arrays={"u": u}, scalars={"round": r + 1, "total": total})
        if u.rank == 0 and r % 50 == 0:
            print(f"round {r}", flush=True)
    whole = u.gather()
    if u.rank == 0:
        digest = hashlib.sha256(np.ascontiguousarray(whole).tobytes() + str(total).encode())
        print(f"answer = {digest.hexdigest()}", flush=True)


if __name__ == "__main__":
    main()
