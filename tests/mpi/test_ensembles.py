"""Ensembles of parallel tasks, ``parcomp.map(fn, items, ranks_per_task=k)``: each group
of k ranks runs whole items with its own communicator (also the default one inside a
task), results match a serial NumPy computation, failures and bad groupings are errors on
every rank, never hangs, and an ensemble resumes from its committed items."""

from pathlib import Path

import numpy as np
import pytest
from mpi4py import MPI

import parcomp
from parcomp.runtime.errors import ConfigError, TaskError
from parcomp.testing import parallel_assert

COMM = MPI.COMM_WORLD
RANK, SIZE = COMM.rank, COMM.size
K = 2 if SIZE % 2 == 0 else SIZE  # 1->1, 2->2, 3->3, 4->2


def folder(factory, name):
    return Path(COMM.bcast(str(factory.mktemp(name)) if RANK == 0 else None))


def diffuse(alpha, comm):
    """A small heat run on the task's group: a DistArray made without comm= lives on it."""
    assert parcomp.default_comm() is comm
    u = parcomp.DistArray.fromfunction(lambda i, j: np.sin(i + 1.0) * np.cos(j), (12, 10), halo=1)
    for _ in range(5):
        u.exchange_halos()
        a = u.local
        a[1:-1, 1:-1] += alpha * (a[2:, 1:-1] + a[:-2, 1:-1] - 2 * a[1:-1, 1:-1])
    return comm.Get_size(), u.partition.size, float(np.round(u.sum(), 12))


def serial(alpha):
    i, j = np.meshgrid(np.arange(12), np.arange(10), indexing="ij")
    a = np.zeros((14, 12))
    a[1:-1, 1:-1] = np.sin(i + 1.0) * np.cos(j)
    for _ in range(5):
        a[1:-1, 1:-1] += alpha * (a[2:, 1:-1] + a[:-2, 1:-1] - 2 * a[1:-1, 1:-1])
    return float(np.round(a[1:-1, 1:-1].sum(), 12))


def test_each_group_runs_whole_items_on_its_own_communicator():
    alphas = [0.01 * a for a in range(7)]
    out = parcomp.map(diffuse, alphas, ranks_per_task=K)
    want = [(K, K, serial(a)) for a in alphas]
    got = [(s, p, round(v, 9)) for s, p, v in out]
    parallel_assert(got == [(s, p, round(v, 9)) for s, p, v in want], (got, want))


def test_a_group_size_that_does_not_divide_is_an_error_on_every_rank():
    with pytest.raises(ConfigError, match=rf"ranks_per_task={SIZE + 1} does not divide"):
        parcomp.map(diffuse, [0.1], ranks_per_task=SIZE + 1)
    with pytest.raises(ConfigError, match="positive integer"):
        parcomp.map(diffuse, [0.1], ranks_per_task=0)


def whole_map_inside(x, comm):
    return parcomp.map(abs, range(3), comm=COMM)  # the whole world: would wait forever


def group_map_inside(x, comm):
    return parcomp.map(lambda v: v * x, range(3))  # the task's group: fine


def test_a_map_over_the_whole_communicator_inside_a_task_is_refused():
    inner = parcomp.map(group_map_inside, [1, 2, 3], ranks_per_task=K)
    parallel_assert(inner == [[0, 1, 2], [0, 2, 4], [0, 3, 6]], inner)
    world = parcomp.default_comm()
    with pytest.raises(TaskError, match="inside an ensemble task"):
        parcomp.map(lambda x, c: parcomp.map(abs, [x], comm=world), [1, 2], ranks_per_task=K)


def fails_on_last_rank(x, comm):
    total = comm.allreduce(x)  # the task's own collective, then a failure on one rank
    if x == 3 and comm.Get_rank() == comm.Get_size() - 1:
        raise ValueError(f"bad parameter {x}")
    return total


def test_a_task_failing_on_one_rank_of_its_group_fails_everywhere():
    with pytest.raises(TaskError, match="bad parameter 3"):
        parcomp.map(fails_on_last_rank, range(6), ranks_per_task=K)
    ok = parcomp.map(fails_on_last_rank, [0, 1, 2], ranks_per_task=K)
    parallel_assert(ok == [x * K for x in (0, 1, 2)])


class Side:
    def __init__(self, where):
        self.where = where

    def __call__(self, x, comm):
        if comm.Get_rank() == 0:
            with open(self.where / f"calls-{RANK}", "a") as fh:
                fh.write(f"{x}\n")
        if (self.where / "fail-at").exists() and int((self.where / "fail-at").read_text()) == x:
            raise RuntimeError(f"failing at {x}")
        return comm.allreduce(x * x)


def test_an_ensemble_resumes_from_its_committed_items(tmp_path_factory):
    where = folder(tmp_path_factory, "ens")
    if RANK == 0:
        (where / "fail-at").write_text("13")
    COMM.Barrier()
    task = Side(where)
    with pytest.raises(TaskError, match="failing at 13"):
        parcomp.map(task, range(20), ranks_per_task=K, checkpoint=where / "p", every_items=4)
    COMM.Barrier()
    if RANK == 0:
        (where / "fail-at").unlink()
    COMM.Barrier()
    out = parcomp.map(task, range(20), ranks_per_task=K, checkpoint=where / "p", every_items=4)
    COMM.Barrier()
    ran = []
    for f in where.glob("calls-*"):
        ran += [int(v) for v in f.read_text().split()]
    twice = {x for x in ran if ran.count(x) > 1}
    parallel_assert(
        out == [K * x * x for x in range(20)]
        and set(ran) == set(range(20))
        and twice <= set(range(12, 16)),
        (out, sorted(twice)),
    )
    other = 1 if K != 1 else None  # on 1 rank every group size is 1
    if other is not None:
        with pytest.raises(ConfigError, match="layout of the work"):
            parcomp.map(task, range(20), ranks_per_task=other, checkpoint=where / "p")
