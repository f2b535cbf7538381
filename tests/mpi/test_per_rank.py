"""Per-rank data in checkpoints (``local=``): arrays whose length differs between ranks,
restored as each rank's own piece, as balanced blocks on another rank count, or as a
callback deals them; verified slab by slab, refused when damaged."""

import numpy as np
import pytest
from mpi4py import MPI

from parcomp.arrays.array import DistArray
from parcomp.checkpoint import Checkpointer
from parcomp.runtime.errors import ConfigError
from parcomp.testing import parallel_assert

COMM = MPI.COMM_WORLD
RANK, SIZE = COMM.rank, COMM.size


def particles(rank):
    """Rank r's particles: 3 r + 2 rows of (x, y, id), ids globally unique, in rank order."""
    n = 3 * rank + 2
    start = sum(3 * r + 2 for r in range(rank))
    ids = np.arange(start, start + n, dtype=np.float64)
    return np.stack([ids * 0.5, -ids, ids], axis=1)


def everything():
    return np.concatenate([particles(r) for r in range(SIZE)])


@pytest.fixture
def folder(tmp_path_factory):
    return COMM.bcast(str(tmp_path_factory.mktemp("perrank")) if RANK == 0 else None)


def save(folder, **extra):
    ck = Checkpointer(folder, handle_signals=False)
    u = DistArray.zeros((8,))
    seeds = np.array([12345 + RANK], np.uint64)  # e.g. a per-rank RNG seed or counter
    ck.save(7, arrays={"u": u}, local={"p": particles(RANK), "seed": seeds}, **extra)
    ck.close()


def test_same_rank_count_gives_every_rank_its_own_piece(folder):
    save(folder)
    back = Checkpointer(folder, handle_signals=False).restore()
    parallel_assert(np.array_equal(back.local["p"], particles(RANK)))
    parallel_assert(back.local["seed"].tolist() == [12345 + RANK])


def test_fewer_ranks_get_balanced_blocks_in_order(folder):
    save(folder)
    keep = max(1, SIZE - 1)
    sub = COMM.Split(0 if RANK < keep else MPI.UNDEFINED, RANK)
    if sub != MPI.COMM_NULL:
        back = Checkpointer(folder, handle_signals=False, comm=sub).restore()
        got = sub.allgather(back.local["p"])
        joined = np.concatenate(got)
        sizes = [len(g) for g in got]
        parallel_assert(np.array_equal(joined, everything()), comm=sub)
        parallel_assert(max(sizes) - min(sizes) <= 1 or keep == SIZE, f"{sizes}", comm=sub)
        sub.Free()
    parallel_assert(True)


def test_a_callback_deals_the_pieces(folder):
    save(folder)

    def reversed_halves(lengths, rank, size):  # the last rank takes the first rows ...
        total = sum(lengths)
        k = size - 1 - rank
        return k * total // size, (k + 1) * total // size

    back = Checkpointer(folder, handle_signals=False).restore(redeal=reversed_halves)
    total = len(everything())
    k = SIZE - 1 - RANK
    parallel_assert(
        np.array_equal(back.local["p"], everything()[k * total // SIZE : (k + 1) * total // SIZE])
    )

    with pytest.raises(ConfigError, match="redeal for local array"):
        Checkpointer(folder, handle_signals=False).restore(redeal=lambda lengths, r, s: (0, 10**9))
    parallel_assert(True)


def test_damaged_piece_falls_back_to_the_previous_checkpoint(folder):
    ck = Checkpointer(folder, handle_signals=False, keep=3)
    u = DistArray.zeros((8,))
    ck.save(1, arrays={"u": u}, local={"p": particles(RANK)})
    ck.save(2, arrays={"u": u}, local={"p": particles(RANK) + 1.0})
    ck.close()
    COMM.Barrier()
    if RANK == 0:
        import h5py

        shard = f"{folder}/step-00000002/shard-{SIZE - 1:05d}-of-{SIZE:05d}.h5"
        with h5py.File(shard, "r") as fh:
            offset = fh["local/p"].id.get_chunk_info(0).byte_offset
        with open(shard, "r+b") as fh:
            fh.seek(offset + 3)
            byte = fh.read(1)
            fh.seek(offset + 3)
            fh.write(bytes([byte[0] ^ 0x10]))
    COMM.Barrier()
    back = Checkpointer(folder, handle_signals=False).restore()
    parallel_assert(back.step == 1 and np.array_equal(back.local["p"], particles(RANK)))


def test_local_data_must_agree_in_dtype_and_tail(folder):
    ck = Checkpointer(folder, handle_signals=False)
    u = DistArray.zeros((8,))
    bad = np.zeros((2, 3 if RANK == 0 else 4))
    if SIZE > 1:
        with pytest.raises(ConfigError, match="only the length may differ"):
            ck.save(1, arrays={"u": u}, local={"p": bad})
    with pytest.raises(ConfigError, match="must be a numpy array"):
        ck.save(1, arrays={"u": u}, local={"p": [1, 2, 3]})
    ck.close()
    parallel_assert(True)
