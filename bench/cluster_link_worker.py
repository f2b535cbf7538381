"""One job of bench/cluster_link.py: parcomp against hand-written mpi4py, 2 ranks.

Cases, each timed barrier to barrier (the slowest rank), medians of the repeats, the
cases of one group interleaved (so drift hits them alike):

* ``halo RxC``: heat2d's 5-point step on an R x C block per rank (rows split, one halo
  row of C float64 each way per step): ``run_stencil`` with ``overlap=False`` and
  ``overlap=True``, and a hand-written mpi4py step (``Sendrecv`` of one row each way,
  then the same Numba sweep);
* ``steps=k``: the same with a halo k deep and ``run_stencil(steps=k)`` (one exchange of k
  rows per k steps), against the hand-written one-row-per-step code;
* ``redistribute``: an S x S float64 array from rows to columns: ``DistArray.redistribute``
  against a hand-written ``Alltoall`` of contiguous blocks (pack, exchange, unpack);
* ``fft``: a complex N^3 forward FFT: ``parcomp.arrays.fft.fftn`` against a hand-written slab FFT
  (``numpy.fft.fftn`` over the two local axes, ``Alltoall`` transpose, ``numpy.fft.fft``
  over the first);
* ``shuffle``: a keyed count, M int64 keys per rank drawn from K: ``map_reduce_keyed``
  (``root=None``) against a hand-written combine / owner-sort / ``Alltoall`` of counts /
  ``Alltoallv`` / combine.

Every parcomp result is checked against its hand-written twin before timing.  Rank 0
prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import numpy as np
from heat2d_worker import bare_step  # the hand-written sweep of bench/heat2d.py
from mpi4py import MPI

from parcomp import run_stencil
from parcomp.arrays.array import DistArray
from parcomp.arrays.fft import fftn
from parcomp.grid.halo import STATS
from parcomp.kernels import heat_step_2d
from parcomp.mapreduce.keyed import map_reduce_keyed

COMM = MPI.COMM_WORLD
ALPHA = 0.1


def timed(fn: Callable[[], object]) -> float:
    COMM.Barrier()
    t0 = time.perf_counter()
    fn()
    COMM.Barrier()
    return time.perf_counter() - t0


def interleave(cases: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {k: [] for k in cases}
    for fn in cases.values():
        fn()  # warm: compile, plan, first touch
    for _ in range(repeats):
        for name, fn in cases.items():
            samples[name].append(timed(fn))
    return {k: COMM.bcast(statistics.median(v)) for k, v in samples.items()}


# ----------------------------------------------------------------------------- halos
class Hand:
    """Rows split over the ranks, one ghost row each side, Sendrecv then the sweep."""

    def __init__(self, rows: int, cols: int) -> None:
        r, p = COMM.rank, COMM.size
        gi = np.arange(r * rows, (r + 1) * rows)[:, None]
        gj = np.arange(cols)[None, :]
        self.u = np.zeros((rows + 2, cols + 2))
        self.u[1:-1, 1:-1] = np.sin(gi * 0.01) + np.cos(gj * 0.02)
        self.v = np.zeros_like(self.u)
        self.up = r - 1 if r > 0 else MPI.PROC_NULL
        self.down = r + 1 if r < p - 1 else MPI.PROC_NULL

    def step(self, n: int) -> None:
        u, v = self.u, self.v
        for _ in range(n):
            COMM.Sendrecv(u[1], self.up, 0, u[-1], self.down, 0)
            COMM.Sendrecv(u[-2], self.down, 1, u[0], self.up, 1)
            bare_step(u, v, ALPHA)
            u, v = v, u
        self.u, self.v = u, v


def halo_cases(rows: int, cols: int, steps: int, ks: list[int], repeats: int) -> dict:
    shape = (rows * COMM.size, cols)

    def init(i, j):
        return np.sin(i * 0.01) + np.cos(j * 0.02)

    arrays = {}
    for k in [1, *ks]:
        u = DistArray.fromfunction(init, shape, halo=(k, 1), dims=(COMM.size, 1))
        arrays[k] = [u, u.zeros_like()]
    hand = Hand(rows, cols)

    def stencil(k: int, overlap: bool) -> Callable[[], None]:
        def go() -> None:
            pair = arrays[k]
            for _ in range(steps // k):
                if k == 1:  # one step per call: the caller swaps
                    run_stencil(heat_step_2d, pair[0], pair[1], ALPHA, overlap=overlap)
                    pair.reverse()
                else:
                    pair[0], pair[1], _ = run_stencil(
                        heat_step_2d, pair[0], pair[1], ALPHA, steps=k, overlap=overlap
                    )

        return go

    # the same answer first: parcomp's and the hand-written code's after 2k steps
    check = Hand(rows, cols)
    u = DistArray.fromfunction(init, shape, halo=(1, 1), dims=(COMM.size, 1))
    v = u.zeros_like()
    for _ in range(4):
        run_stencil(heat_step_2d, u, v, ALPHA)
        u, v = v, u
    check.step(4)
    assert np.array_equal(u.interior, check.u[1:-1, 1:-1]), "halo: parcomp != hand-written"
    cases = {"hand-written": lambda: hand.step(steps), "overlap=False": stencil(1, False),
             "overlap=True": stencil(1, True)}  # fmt: skip
    for k in ks:
        cases[f"steps={k}"] = stencil(k, False)
    before = STATS.messages
    times = interleave(cases, repeats)
    return {
        "rows": rows,
        "cols": cols,
        "message_bytes": cols * 8,
        "steps": steps,
        "seconds": times,
        "messages": STATS.messages - before,
    }


# ----------------------------------------------------------------------------- transposes
def hand_transpose(block: np.ndarray) -> np.ndarray:
    """Rows -> columns of a 2-D array split by rows: pack, Alltoall, unpack."""
    p = COMM.size
    rows, n = block.shape
    send = np.ascontiguousarray(block.reshape(rows, p, n // p).transpose(1, 0, 2))
    recv = np.empty_like(send)
    COMM.Alltoall(send, recv)
    return recv.reshape(p * rows, n // p)


def redistribute_case(size: int, repeats: int) -> dict:
    a = DistArray.fromfunction(lambda i, j: i * 1.0 + j * 1e-4, (size, size), halo=0,
                               dims=(COMM.size, 1))  # fmt: skip
    out = a.redistribute(dims=(1, COMM.size))
    assert np.array_equal(out.interior, hand_transpose(a.interior)), "redistribute differs"
    times = interleave(
        {"hand-written": lambda: hand_transpose(a.interior),
         "parcomp": lambda: a.redistribute(dims=(1, COMM.size), out=out)}, repeats)  # fmt: skip
    return {"size": size, "bytes_per_rank": size * size * 8 // COMM.size, "seconds": times}


def hand_fft(x: np.ndarray) -> np.ndarray:
    """Slab FFT: axes 1, 2 locally, transpose axis 0 <-> 1, axis 0; leaves axis 1 split."""
    p = COMM.size
    m, n, _ = x.shape
    a = np.fft.fftn(x, axes=(1, 2))
    send = np.ascontiguousarray(a.reshape(m, p, n // p, n).transpose(1, 0, 2, 3))
    recv = np.empty_like(send)
    COMM.Alltoall(send, recv)
    return np.fft.fft(recv.reshape(p * m, n // p, n), axis=0)


def fft_case(n: int, repeats: int) -> dict:
    rng = np.random.default_rng(7)
    full = rng.standard_normal((n, n, n)) + 1j * rng.standard_normal((n, n, n))
    a = DistArray.from_global(full if COMM.rank == 0 else None, global_shape=(n, n, n),
                              halo=0, dims=(COMM.size, 1, 1))  # fmt: skip
    mine = np.ascontiguousarray(a.interior)
    ours, theirs = fftn(a), hand_fft(mine)
    norms = COMM.allreduce(np.array([np.vdot(ours.interior, ours.interior).real,
                                     np.vdot(theirs, theirs).real]))  # fmt: skip
    assert abs(norms[0] - norms[1]) <= 1e-10 * norms[1], "fft: parcomp != hand-written"
    times = interleave({"hand-written": lambda: hand_fft(mine), "parcomp": lambda: fftn(a)},
                       repeats)  # fmt: skip
    return {"n": n, "bytes_per_rank": n**3 * 16 // COMM.size, "seconds": times}


# ----------------------------------------------------------------------------- shuffle
def keys_of(item: int, m: int, k: int) -> np.ndarray:
    return np.random.default_rng(item).integers(0, k, m, dtype=np.int64)


def hand_shuffle(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Combine, sort by owner (key mod p), Alltoall the counts, Alltoallv, combine."""
    p = COMM.size
    uniq, counts = np.unique(keys, return_counts=True)
    owner = uniq % p
    order = np.argsort(owner, kind="stable")
    uniq, counts = uniq[order], counts[order].astype(np.int64)
    send_n = np.bincount(owner, minlength=p).astype(np.int64)
    recv_n = np.empty(p, np.int64)
    COMM.Alltoall(send_n, recv_n)
    sdisp = np.concatenate([[0], np.cumsum(send_n)[:-1]])
    rdisp = np.concatenate([[0], np.cumsum(recv_n)[:-1]])
    got_k = np.empty(recv_n.sum(), np.int64)
    got_c = np.empty(recv_n.sum(), np.int64)
    COMM.Alltoallv([uniq, (send_n, sdisp), MPI.INT64_T], [got_k, (recv_n, rdisp), MPI.INT64_T])
    COMM.Alltoallv([counts, (send_n, sdisp), MPI.INT64_T], [got_c, (recv_n, rdisp), MPI.INT64_T])
    order = np.argsort(got_k, kind="stable")
    got_k, got_c = got_k[order], got_c[order]
    starts = np.flatnonzero(np.r_[True, got_k[1:] != got_k[:-1]])
    return got_k[starts], np.add.reduceat(got_c, starts) if len(got_c) else got_c


def shuffle_case(m: int, k: int, repeats: int) -> dict:
    items = range(COMM.size)

    def mapper(item: int):
        keys = keys_of(item, m, k)
        return keys, np.ones(len(keys), np.int64)

    mine = keys_of(COMM.rank, m, k)
    ours = map_reduce_keyed(mapper, items, "sum", root=None)
    hk, hc = hand_shuffle(mine)
    total = COMM.allreduce(sum(ours.values()))
    assert total == COMM.allreduce(int(hc.sum())) == m * COMM.size, "shuffle: totals differ"
    assert COMM.allreduce(len(ours)) == COMM.allreduce(len(hk)), "shuffle: key counts differ"
    times = interleave(
        {"hand-written": lambda: hand_shuffle(keys_of(COMM.rank, m, k)),
         "parcomp": lambda: map_reduce_keyed(mapper, items, "sum", root=None)}, repeats)  # fmt: skip
    return {"keys_per_rank": m, "key_space": k, "seconds": times}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--halo-only", action="store_true")
    args = parser.parse_args()
    r = args.repeats
    out: dict[str, object] = {"ranks": COMM.size, "host": MPI.Get_processor_name()}
    blocks = [(256, 256, 200), (1024, 1024, 40), (256, 8192, 40), (64, 65536, 40),
              (16, 524288, 20)]  # fmt: skip
    if args.quick:
        blocks = blocks[:1]
    out["halo"] = [halo_cases(rows, cols, steps, [4, 8], r) for rows, cols, steps in blocks]
    if args.halo_only:
        out["hosts"] = COMM.gather(MPI.Get_processor_name())
        if COMM.rank == 0:
            print(json.dumps(out))
        return
    out["redistribute"] = redistribute_case(1024 if args.quick else 4096, r)
    out["fft"] = fft_case(32 if args.quick else 128, r)
    out["shuffle"] = shuffle_case(200_000 if args.quick else 2_000_000, 4_000_000, r)
    out["hosts"] = COMM.gather(MPI.Get_processor_name())
    if COMM.rank == 0:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
