"""Resumable maps, parcomp.map(..., checkpoint=) (issue 27, a first slice): a map interrupted by a failing item and
rerun resumes from its last commit on any rank count, computes every item once plus at
most the round in flight, and a progress folder of another call is refused."""

from pathlib import Path

import pytest
from mpi4py import MPI

import parcomp
from parcomp.runtime.errors import ConfigError, TaskError
from parcomp.testing import parallel_assert

COMM = MPI.COMM_WORLD
RANK, SIZE = COMM.rank, COMM.size


def folder(factory, name):
    return Path(COMM.bcast(str(factory.mktemp(name)) if RANK == 0 else None))


class Counted:
    """A mapper that writes each call to a side file and fails at one item when told."""

    def __init__(self, where: Path):
        self.where = where

    def __call__(self, x):
        with open(self.where / f"calls-{RANK}", "a") as fh:
            fh.write(f"{x}\n")
        stop = self.where / "fail-at"
        if stop.exists() and int(stop.read_text()) == x:
            raise RuntimeError(f"failing at {x}")
        return {"x": x, "square": x * x}


def calls(where: Path) -> list[int]:
    out = []
    for f in where.glob("calls-*"):
        out += [int(v) for v in f.read_text().split()]
    return out


def test_a_failed_map_resumes_where_it_stopped(tmp_path_factory):
    where = folder(tmp_path_factory, "resume")
    if RANK == 0:
        (where / "fail-at").write_text("37")
    COMM.Barrier()
    mapper = Counted(where)
    with pytest.raises(TaskError, match="failing at 37"):
        parcomp.map(mapper, range(80), checkpoint=where / "progress", every_items=10)
    COMM.Barrier()
    if RANK == 0:
        (where / "fail-at").unlink()
    COMM.Barrier()
    out = parcomp.map(mapper, range(80), checkpoint=where / "progress", every_items=10)
    COMM.Barrier()
    ran = calls(where)
    twice = {x for x in ran if ran.count(x) > 1}
    parallel_assert(
        out == [{"x": x, "square": x * x} for x in range(80)]
        and set(ran) == set(range(80))
        and twice <= set(range(30, 40)),  # only the round in flight at the failure
        (sorted(twice), len(ran)),
    )


def test_progress_of_another_call_is_refused(tmp_path_factory):
    where = folder(tmp_path_factory, "other")
    parcomp.map(abs, range(-5, 5), checkpoint=where, every_items=3)
    with pytest.raises(ConfigError, match=r"another map call.*work items"):
        parcomp.map(abs, range(-5, 6), checkpoint=where, every_items=3)
    again = parcomp.map(abs, range(-5, 6), checkpoint=where, every_items=3, resume="ignore")
    parallel_assert(again == [abs(x) for x in range(-5, 6)])
