"""@parcomp.jit: compile once per machine while all ranks start together."""

import importlib.util
import os
import sys
import textwrap

import numpy as np
from mpi4py import MPI

from parcomp.testing import parallel_assert

KERNEL = """
import parcomp

@parcomp.jit
def weighted(a, w):
    s = 0.0
    for i in range(a.shape[0]):
        s += a[i] * w
    return s
"""


def test_compile_once_then_load(tmp_path_factory, monkeypatch):
    comm = MPI.COMM_WORLD
    folder = comm.bcast(str(tmp_path_factory.mktemp("jit")) if comm.rank == 0 else None)
    cache = os.path.join(folder, "cache")
    if comm.rank == 0:
        with open(os.path.join(folder, "kmod.py"), "w") as fh:
            fh.write(textwrap.dedent(KERNEL))
    comm.Barrier()
    monkeypatch.setenv("NUMBA_CACHE_DIR", cache)
    spec = importlib.util.spec_from_file_location("kmod_jit_test", os.path.join(folder, "kmod.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules["kmod_jit_test"] = mod  # Numba's cache refers to the kernel's module by name
    spec.loader.exec_module(mod)
    try:
        value = mod.weighted(np.arange(5.0), 2.0)
        counts = comm.allgather((mod.weighted.compiled, mod.weighted.loaded))
        compiled = sum(c for c, _ in counts)
        loaded = sum(lo for _, lo in counts)
        parallel_assert(value == 20.0)
        parallel_assert(
            compiled == 1 and loaded == comm.size - 1,
            f"compiled {compiled} times, loaded {loaded} times: {counts}",
        )
        # a second signature is again compiled by one rank only
        mod.weighted(np.arange(5, dtype=np.float32), 2.0)
        counts = comm.allgather(mod.weighted.compiled)
        parallel_assert(sum(counts) == 2, f"{counts}")
        mode = os.stat(cache).st_mode & 0o777
        parallel_assert(mode & 0o022 == 0, f"cache dir mode {mode:o}")
    finally:
        sys.modules.pop("kmod_jit_test", None)
