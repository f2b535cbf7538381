"""Pickle-free collectives (parcomp.runtime.wire) on 1..4 ranks, against what each rank sent."""

import numpy as np
from mpi4py import MPI

from parcomp.runtime.wire import (
    agree_errors,
    allgather_bytes,
    allgather_ints,
    allgather_json,
    bcast_bytes,
    bcast_json,
    gather_bytes,
    gather_json,
)
from parcomp.testing import parallel_assert

COMM = MPI.COMM_WORLD
RANK, SIZE = COMM.rank, COMM.size


def payload(r):
    return bytes(range(r * 7 % 256)) * (r + 1) if r % 2 else b""  # empty on even ranks


def test_bytes_round_trip_with_empty_and_uneven_pieces():
    got = allgather_bytes(COMM, payload(RANK))
    parallel_assert(got == [payload(r) for r in range(SIZE)])
    root = SIZE - 1
    gathered = gather_bytes(COMM, payload(RANK), root=root)
    parallel_assert(gathered == ([payload(r) for r in range(SIZE)] if RANK == root else None))
    parallel_assert(
        bcast_bytes(COMM, payload(3) if RANK == root else None, root=root) == payload(3)
    )


def test_json_values_keep_their_structure():
    mine = {"rank": RANK, "name": f"r{RANK}", "x": [1.5, None, True], "nan": float("inf")}
    every = allgather_json(COMM, mine)
    parallel_assert([e["rank"] for e in every] == list(range(SIZE)))
    parallel_assert(all(e["nan"] == float("inf") and e["x"] == [1.5, None, True] for e in every))
    on_root = gather_json(COMM, [RANK] * RANK)
    parallel_assert(on_root == ([[r] * r for r in range(SIZE)] if RANK == 0 else None))
    parallel_assert(bcast_json(COMM, {"k": [1, 2]} if RANK == 0 else None) == {"k": [1, 2]})


def test_ints_and_error_agreement():
    table = allgather_ints(COMM, [RANK, -RANK, 2**40 + RANK])
    parallel_assert(table.shape == (SIZE, 3) and table.dtype == np.int64)
    parallel_assert(all(table[r].tolist() == [r, -r, 2**40 + r] for r in range(SIZE)))
    parallel_assert(agree_errors(COMM, None) == [])
    errors = agree_errors(COMM, f"rank {RANK}: broken" if RANK == SIZE - 1 else None)
    parallel_assert(errors == [f"rank {SIZE - 1}: broken"])
    parallel_assert(agree_errors(COMM, "") == [""] * SIZE)  # an empty message still counts
