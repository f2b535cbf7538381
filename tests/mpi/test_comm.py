"""The default communicator, collective checks and rank-tagged logging, on 1..4 ranks."""

import io

import numpy as np
import pytest
from mpi4py import MPI

import parcomp
from parcomp.runtime.errors import CollectiveError, ShapeError
from parcomp.runtime.log import configure_logging
from parcomp.runtime.ranks import world_rank_size
from parcomp.testing import parallel_assert


def test_default_comm_is_a_dup_of_world():
    comm = parcomp.default_comm()
    assert comm is parcomp.default_comm()
    assert MPI.Comm.Compare(comm, MPI.COMM_WORLD) == MPI.CONGRUENT
    assert comm.Get_name() == "parcomp"
    assert parcomp.rank() == MPI.COMM_WORLD.rank
    assert parcomp.size() == MPI.COMM_WORLD.size
    assert world_rank_size() == (MPI.COMM_WORLD.rank, MPI.COMM_WORLD.size)


@pytest.mark.mpi(min_size=2)
def test_library_traffic_does_not_match_user_messages():
    world, lib = MPI.COMM_WORLD, parcomp.default_comm()
    if world.rank == 0:
        world.send("user", dest=1, tag=7)
        lib.send("library", dest=1, tag=7)
    elif world.rank == 1:
        got_lib = lib.recv(source=0, tag=7)  # receive the library message first
        got_user = world.recv(source=0, tag=7)
        parallel_assert((got_lib, got_user) == ("library", "user"), f"{got_lib}, {got_user}", world)
        return
    parallel_assert(True, comm=world)


def test_parallel_assert_names_failing_rank(any_comm):
    last = any_comm.size - 1
    parallel_assert(True, comm=any_comm)
    with pytest.raises(
        AssertionError, match=rf"rank\(s\) \[{last}\] of {any_comm.size}: rank {last}: bad"
    ):
        parallel_assert(any_comm.rank != last, "bad", comm=any_comm)


def test_agree(any_comm):
    assert parcomp.agree(True, any_comm)
    assert not parcomp.agree(any_comm.rank != any_comm.size - 1, any_comm)


def test_raise_if_any_reaches_every_rank(any_comm):
    last = any_comm.size - 1
    parcomp.raise_if_any(None, any_comm)
    err = ShapeError("block too small") if any_comm.rank == last else None
    with pytest.raises(ShapeError, match="block too small") as info:
        parcomp.raise_if_any(err, any_comm)
    if any_comm.rank != last:
        assert info.value.failed_ranks == (last,)
        assert f"rank {last}: ShapeError" in str(info.value)

    # an exception type parcomp cannot rebuild becomes a CollectiveError on the other ranks
    class OddError(Exception):
        def __init__(self, a, b):
            super().__init__(a, b)

    err = OddError(1, 2) if any_comm.rank == last else None
    expected = OddError if any_comm.rank == last else CollectiveError
    with pytest.raises(expected):
        parcomp.raise_if_any(err, any_comm)
    # the communicator still works afterwards: nobody was left inside a collective
    assert any_comm.allreduce(1) == any_comm.size


def test_logging_tag_under_mpi():
    stream = io.StringIO()
    try:
        configure_logging(level="INFO", other_ranks_level="INFO", stream=stream)
        parcomp.get_logger("t").info("x=%d", 3)
    finally:
        configure_logging()
    r, n = MPI.COMM_WORLD.rank, MPI.COMM_WORLD.size
    parallel_assert(stream.getvalue() == f"[rank {r}/{n}] INFO parcomp.t: x=3\n", stream.getvalue())


def test_pi_job_same_answer_on_any_rank_count(job):
    pi = job("pi")
    samples, chunk = 3_000_017, 250_000
    parallel_value = pi.estimate_pi(samples, chunk, seed=5)
    # serial reference: every chunk on this rank alone, in a plain loop
    hits = sum(pi.chunk_hits(5, i, n) for i, n in enumerate(pi.chunk_sizes(samples, chunk)))
    reference = 4.0 * hits / samples
    parallel_assert(parallel_value == reference, f"{parallel_value} != {reference}")
    parallel_assert(abs(reference - np.pi) < 5e-3, f"{reference} is far from pi")


def test_log_tag_follows_the_default_communicator_after_a_shrink():
    # was: logs kept saying [rank 0/3] after an in-job shrink to 2 ranks.  A shrink makes
    # the shrunk communicator parcomp's default (parcomp.runtime.resilient); emulate it with a split.
    import io

    from parcomp.runtime import ranks

    world = MPI.COMM_WORLD
    keep = world.size - 1 if world.size > 1 else 1
    sub = world.Split(0 if world.rank < keep else MPI.UNDEFINED, world.rank)
    saved = ranks.default_comm()
    stream = io.StringIO()
    try:
        if sub != MPI.COMM_NULL:
            ranks.replace_default_comm(saved, sub)
            log = configure_logging(level="INFO", other_ranks_level="INFO", stream=stream)
            log.info("hello")
    finally:
        ranks.replace_default_comm(ranks.default_comm(), saved)
        configure_logging()
    if sub != MPI.COMM_NULL:
        want = f"[rank {sub.rank}/{sub.size}] INFO parcomp: hello"
        parallel_assert(stream.getvalue().strip() == want, stream.getvalue())
        sub.Free()
    else:
        parallel_assert(True)
