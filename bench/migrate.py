"""DistParticles.migrate against a hand-written migration and a raw MPI_Alltoallv, same run.

Run:  .venv/bin/python bench/migrate.py [-n 2] [--particles 1000000] [--moving 0.05]

Each rank holds ``--particles`` particles (3-d float64 positions, float64 velocities, an
int64 id: 56 bytes each) in a periodic box split in ``p`` slabs; ``--moving`` of them
(5 %) get a position in another rank's slab.  Cases, interleaved, each timed barrier to
barrier (the slowest rank), medians of ``--repeats``; every case starts from the same
state (the particles are reset outside the timed region):

* ``raw Alltoallv``: one ``MPI_Alltoallv`` of exactly the moved bytes between
  preallocated buffers (the floor: no owner lookup, no packing);
* ``hand-written``: what a user writes without parcomp (the 45 lines of the issue):
  vectorised owner lookup with NumPy, an ``Alltoall`` of counts, packing into one
  record buffer, one ``Alltoallv``, unpacking and concatenating;
* ``migrate``: ``DistParticles.migrate`` (which also checks positions, wraps periodic
  axes and keeps the fields' order).

Targets: migrate <= 1.5x the hand-written code.  The ratio to the raw Alltoallv is shown
too.  The moved particles are checked to arrive (counts over all ranks).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))


def worker(n: int, moving: float, repeats: int) -> None:
    import numpy as np
    from _common import machine
    from mpi4py import MPI

    from parcomp.arrays.array import DistArray
    from parcomp.particles.dist import DistParticles

    comm = MPI.COMM_WORLD
    p, rank = comm.size, comm.rank
    shape = (64 * p, 64, 64)
    grid = DistArray(shape, periods=True, dims=(p, 1, 1), comm=comm)
    lo, hi = grid.local_range[0]
    rng = np.random.default_rng(rank)
    x0 = rng.uniform(0, 1, (n, 3)) * [hi - lo, 64, 64] + [lo, 0, 0]
    movers = rng.random(n) < moving
    x1 = x0.copy()
    x1[movers, 0] = (x1[movers, 0] + 64 * rng.integers(1, max(p, 2), movers.sum())) % shape[0]
    v0 = rng.normal(size=(n, 3))
    ids = np.arange(n, dtype=np.int64) + rank * n
    parts = DistParticles(grid, {"x": x0.copy(), "v": v0, "id": ids}, box=[(0, s) for s in shape])

    def reset() -> None:
        parts.fields = {"x": x1.copy(), "v": v0.copy(), "id": ids.copy()}

    def migrate() -> None:
        parts.migrate()

    record = np.dtype([("x", np.float64, (3,)), ("v", np.float64, (3,)), ("id", np.int64)])
    state: dict[str, np.ndarray] = {}

    def hand() -> None:
        x, v, i = state["x"], state["v"], state["id"]
        owner = np.clip((x[:, 0] // 64).astype(np.int64), 0, p - 1)  # slabs of 64 cells
        go = owner != rank
        order = np.flatnonzero(go)
        order = order[np.argsort(owner[order], kind="stable")]
        counts = np.bincount(owner[order], minlength=p).astype(np.int64)
        rcounts = np.empty(p, np.int64)
        comm.Alltoall(counts, rcounts)
        send = np.empty(order.size, record)
        send["x"], send["v"], send["id"] = x[order], v[order], i[order]
        recv = np.empty(int(rcounts.sum()), record)
        item = record.itemsize
        sd = np.concatenate(([0], np.cumsum(counts)[:-1])) * item
        rd = np.concatenate(([0], np.cumsum(rcounts)[:-1])) * item
        comm.Alltoallv(
            [send.view(np.uint8), counts * item, sd, MPI.BYTE],
            [recv.view(np.uint8), rcounts * item, rd, MPI.BYTE],
        )
        stay = ~go
        state["x"] = np.concatenate((x[stay], recv["x"]))
        state["v"] = np.concatenate((v[stay], recv["v"]))
        state["id"] = np.concatenate((i[stay], recv["id"]))

    def reset_hand() -> None:
        state.update(x=x1.copy(), v=v0.copy(), id=ids.copy())

    moved = int(movers.sum())
    counts = [0] * p
    if p > 1:
        counts[(rank + 1) % p] = moved * record.itemsize
    rcounts = comm.alltoall(counts)
    sbuf = np.zeros(sum(counts), np.uint8)
    rbuf = np.empty(sum(rcounts), np.uint8)
    sd = np.concatenate(([0], np.cumsum(counts)[:-1])).tolist()
    rd = np.concatenate(([0], np.cumsum(rcounts)[:-1])).tolist()

    def raw() -> None:
        comm.Alltoallv([sbuf, counts, sd, MPI.BYTE], [rbuf, rcounts, rd, MPI.BYTE])

    # correctness: both migrations deliver every particle to its slab
    reset()
    migrate()
    reset_hand()
    hand()
    ok = (
        np.array_equal(np.sort(parts["id"]), np.sort(state["id"]))
        and bool(((parts["x"][:, 0] >= lo) & (parts["x"][:, 0] < hi)).all())
        and comm.allreduce(parts.n_local) == n * p
    )
    if not comm.allreduce(ok, op=MPI.LAND):
        raise SystemExit("migrations disagree")

    import time

    samples: dict[str, list[float]] = {"raw Alltoallv": [], "hand-written": [], "migrate": []}
    pairs = {
        "raw Alltoallv": (raw, lambda: None),
        "hand-written": (hand, reset_hand),
        "migrate": (migrate, reset),
    }
    for fn, prep in pairs.values():  # warm up
        prep()
        fn()
    for _ in range(repeats):
        for name, (fn, prep) in pairs.items():
            prep()
            comm.Barrier()
            t = time.perf_counter()
            fn()
            comm.Barrier()
            samples[name].append(time.perf_counter() - t)
    if rank == 0:
        import statistics

        med = {k: statistics.median(v) for k, v in samples.items()}
        print(
            json.dumps(
                {
                    "machine": machine(),
                    "medians": med,
                    "moved": moved,
                    "bytes": moved * record.itemsize,
                }
            )
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2, help="ranks")
    parser.add_argument("--particles", type=int, default=1_000_000, help="per rank")
    parser.add_argument("--moving", type=float, default=0.05)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.particles, args.moving, args.repeats)
        return 0
    mpiexec = Path(sys.executable).parent / "mpiexec"
    cmd = [str(mpiexec), "-n", str(args.n), sys.executable, str(HERE), "--worker",
           "--particles", str(args.particles), "--moving", str(args.moving),
           "--repeats", str(args.repeats)]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=1200)
    data = json.loads(out.stdout.strip().splitlines()[-1])
    med = data["medians"]
    print(f"machine: {data['machine']}")
    print(
        f"{args.particles:,} particles per rank on {args.n} ranks, {data['moved']:,} moving "
        f"from rank 0 ({data['bytes'] / 1e6:.1f} MB); medians of {args.repeats}\n"
    )
    print("| case | median | vs hand-written | vs raw Alltoallv |")
    print("|---|---:|---:|---:|")
    for name, t in med.items():
        print(
            f"| {name} | {t * 1e3:.1f} ms | {t / med['hand-written']:.2f} | {t / med['raw Alltoallv']:.1f} |"
        )
    if data["moved"] == 0 or med["raw Alltoallv"] <= 0:
        print("no particle moved: nothing was measured")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
