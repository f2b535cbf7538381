"""parcomp's own kernels are cached under keys that are the same in every process.

A kernel built as a closure over an object that pickles differently in each process (a
dispatcher, an intrinsic) is a cache miss in every process: every rank of every job
compiled it again.  The second process here must load every kernel from the cache.
"""

import json
import subprocess
import sys

SCRIPT = r"""
import json
import numpy as np
import parcomp.mapreduce.counter as counter
import parcomp.runtime.exactsum as es
from parcomp.arrays.algebra import _axpy_kernel
from parcomp.io.slabs import _fletcher
from parcomp.kernels import heat_step_2d

es.exact_sum(np.arange(4.0))
es.exact_dot(np.arange(4.0), np.arange(4.0))
counter.atomic_fetch_add(np.zeros(2, np.int64), 1, 3)
_fletcher()
_axpy_kernel()(np.ones((2, 2)), 2.0, np.ones((2, 2)))
u = np.zeros((6, 6))
heat_step_2d(u, u.copy(), 0.1)
kernels = {
    "exact sum": (es._accumulate_kernel(), es.bins.sum_blocks)[1],
    "exact dot": es.bins.stage,
    "fetch_add": counter._fetch_add_kernel,
    "fletcher": _fletcher(),
    "axpy": _axpy_kernel(),
    "heat_step_2d": heat_step_2d.dispatcher,
}
print(json.dumps({k: [sum(d.stats.cache_misses.values()), sum(d.stats.cache_hits.values())]
                  for k, d in kernels.items()}))
"""


def test_second_process_loads_every_internal_kernel_from_the_cache(tmp_path):
    env = {"PARCOMP_NODE_CACHE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    runs = []
    for _ in range(2):
        out = subprocess.run(
            [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300
        )
        assert out.returncode == 0, out.stderr
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    first, second = runs
    assert all(misses >= 1 for misses, _ in first.values()), first
    assert all(misses == 0 and hits >= 1 for misses, hits in second.values()), second
