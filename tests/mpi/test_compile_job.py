"""Compile once per job: one rank compiles, the cache files reach every node over MPI.

Nodes are emulated by giving each rank's process a node name of its own (what
PARCOMP_NODE_NAME does at start-up), on a fresh communicator, so that every rank has a
node-local cache directory of its own under PARCOMP_NODE_CACHE_DIR.
"""

import importlib.util
import os
import sys
import textwrap
import zlib

import numpy as np
import pytest
from mpi4py import MPI

import parcomp
import parcomp.runtime.nodes
from parcomp.arrays.array import DistArray
from parcomp.runtime.errors import ConfigError, KernelSignatureError
from parcomp.testing import parallel_assert
from tests.mpi.test_jit import KERNEL

SIZE, RANK = MPI.COMM_WORLD.size, MPI.COMM_WORLD.rank

SOURCE = (
    KERNEL  # tests/mpi/test_jit.py's `weighted`
    + """
@parcomp.jit
def broken(a):
    return a.no_such_attribute

@parcomp.stencil(radius=1, reads=("u",), writes=("v",))
def smooth(u, v):
    for i in range(1, u.shape[0] - 1):
        v[i] = 0.25 * u[i - 1] + 0.5 * u[i] + 0.25 * u[i + 1]
"""
)


@pytest.fixture
def module(tmp_path_factory, monkeypatch):
    """A fresh kernel module, a fresh node-local cache root, a HOME nobody may touch,
    and one emulated node per rank pair (ranks 2k and 2k+1 share a node)."""
    comm = MPI.COMM_WORLD
    folder = comm.bcast(str(tmp_path_factory.mktemp("jobjit")) if RANK == 0 else None)
    name = f"kjob_{zlib.crc32(folder.encode())}"
    if RANK == 0:
        with open(os.path.join(folder, f"{name}.py"), "w") as fh:
            fh.write(textwrap.dedent(SOURCE))
        os.makedirs(os.path.join(folder, "home"))
    comm.Barrier()
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.delenv("PARCOMP_CACHE_DIR", raising=False)
    monkeypatch.setenv("PARCOMP_NODE_CACHE_DIR", os.path.join(folder, "local"))
    monkeypatch.setenv("HOME", os.path.join(folder, "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", os.path.join(folder, "home", ".cache"))
    monkeypatch.setattr(parcomp.runtime.nodes, "_cached", f"testnode{RANK // 2}")
    spec = importlib.util.spec_from_file_location(name, os.path.join(folder, f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # Numba's cache refers to the kernel's module by name
    spec.loader.exec_module(mod)
    job = comm.Dup()  # its node grouping is made with the emulated names
    try:
        yield mod, job, folder
    finally:
        job.Free()
        sys.modules.pop(name, None)


def _counts(kernel, comm):
    return comm.allgather((kernel.compiled, kernel.loaded))


def test_one_compilation_per_job_and_a_cache_on_every_node(module):
    mod, comm, folder = module
    parcomp.compile_for_job(mod.weighted, np.arange(5.0), 2.0, comm=comm)
    counts = _counts(mod.weighted, comm)
    parallel_assert(
        sum(c for c, _ in counts) == 1 and sum(lo for _, lo in counts) == SIZE - 1,
        f"(compiled, loaded) per rank: {counts}",
    )
    parallel_assert(mod.weighted(np.arange(5.0), 2.0) == 20.0)
    nodes = sorted(os.listdir(os.path.join(folder, "local", f"parcomp-{os.getuid()}")))
    parallel_assert(nodes == [f"node-testnode{k}" for k in range((SIZE + 1) // 2)], f"{nodes}")
    mine = os.path.join(folder, "local", f"parcomp-{os.getuid()}", f"node-testnode{RANK // 2}")
    index = [f for _, _, files in os.walk(mine) for f in files if f.endswith(".nbi")]
    parallel_assert(len(index) == 1, f"{index}")
    parallel_assert(os.listdir(os.path.join(folder, "home")) == [], "HOME was touched")
    # again: nothing to do, nothing compiled or loaded
    parcomp.compile_for_job(mod.weighted, np.arange(3.0), 1.0, comm=comm)
    parallel_assert(_counts(mod.weighted, comm) == counts)
    # new types: one more compilation in the whole job
    parcomp.compile_for_job(mod.weighted, np.arange(3, dtype=np.float32), 1.0, comm=comm)
    parallel_assert(sum(c for c, _ in _counts(mod.weighted, comm)) == 2)


def test_run_stencil_compiles_once_per_job(module):
    mod, comm, _folder = module
    u = DistArray.fromfunction(lambda i: np.sin(i / 3.0), (40,), halo=1, comm=comm)
    v = DistArray.zeros((40,), halo=1, comm=comm)
    parcomp.run_stencil(mod.smooth, u, v)
    counts = _counts(mod.smooth, comm)
    parallel_assert(sum(c for c, _ in counts) == 1, f"{counts}")
    g = np.sin(np.arange(40) / 3.0)
    want = g.copy()
    want[1:-1] = 0.25 * g[:-2] + 0.5 * g[1:-1] + 0.25 * g[2:]
    got = v.gather(root=0)
    parallel_assert(RANK != 0 or np.array_equal(got[1:-1], want[1:-1]), f"{got} {want}")


def test_compile_error_on_every_rank_together(module):
    mod, comm, _folder = module
    with pytest.raises(KernelSignatureError, match=r"no_such_attribute|has no attribute"):
        parcomp.compile_for_job(mod.broken, np.zeros(3), comm=comm)
    parallel_assert(True)


def test_unwritable_node_cache_on_one_rank_fails_everywhere(module, monkeypatch):
    mod, comm, _folder = module
    if RANK == SIZE - 1:  # a regular file where a directory must be: fails even for root
        monkeypatch.setenv("PARCOMP_NODE_CACHE_DIR", "/etc/hostname/parcomp")
    with pytest.raises(ConfigError, match="cannot create the kernel cache directory"):
        parcomp.compile_for_job(mod.weighted, np.arange(5.0), 2.0, comm=comm)
    parallel_assert(True)


def test_a_damaged_cache_entry_is_removed_and_compiled_again(module):
    mod, comm, folder = module
    parcomp.compile_for_job(mod.weighted, np.arange(5.0), 2.0, comm=comm)
    comm.Barrier()
    truncated = 0
    if RANK == 0:  # truncate the data file in rank 0's node cache: what a full disk leaves
        root = os.path.join(folder, "local", f"parcomp-{os.getuid()}", "node-testnode0")
        for base, _, files in os.walk(root):
            for name in files:
                if ".weighted-" in name and name.endswith(".nbc"):
                    path = os.path.join(base, name)
                    with open(path, "r+b") as fh:
                        fh.truncate(50)
                    truncated += 1
    parallel_assert(comm.bcast(truncated) == 1, "one data file truncated", comm=comm)
    # a new process would load it: here, a fresh dispatcher over the same cache
    mod.weighted._dispatcher = None
    mod.weighted._ready.clear()
    mod.weighted._numba_compile_for_args = None
    before = mod.weighted.compiled
    parcomp.compile_for_job(mod.weighted, np.arange(5.0), 2.0, comm=comm)
    parallel_assert(mod.weighted(np.arange(5.0), 2.0) == 20.0)
    again = comm.allgather(mod.weighted.compiled - before)
    parallel_assert(sum(again) == 1, f"compiled again once in the job: {again}")


def test_a_cache_parent_owned_by_another_user_is_refused(module, monkeypatch):
    mod, comm, folder = module
    base = os.path.join(folder, "hostile")
    if RANK == 0:
        os.makedirs(os.path.join(base, f"parcomp-{os.getuid()}"))
        os.chown(os.path.join(base, f"parcomp-{os.getuid()}"), 65534, 65534)
    comm.Barrier()
    monkeypatch.setenv("PARCOMP_NODE_CACHE_DIR", base)
    with pytest.raises(ConfigError, match=r"belongs to uid 65534.*PARCOMP_NODE_CACHE_DIR"):
        parcomp.compile_for_job(mod.weighted, np.arange(5.0), 2.0, comm=comm)
    parallel_assert(True)
