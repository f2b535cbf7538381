"""mpi4py.futures peer (run as `mpiexec -n 3 python -m mpi4py.futures bench/futures_worker.py`)."""

import json
import statistics
import sys
import time
from pathlib import Path

from mpi4py.futures import MPIPoolExecutor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tasks import medium, tiny

if __name__ == "__main__":
    REPEATS = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    with MPIPoolExecutor() as pool:
        cases = {
            "tiny/mpi4py.futures": lambda: sum(pool.map(tiny, range(10_000), chunksize=500)),
            "medium/mpi4py.futures": lambda: sum(pool.map(medium, range(100), chunksize=1)),
        }
        for fn in cases.values():
            fn()
        samples = {name: [] for name in cases}
        for _ in range(REPEATS):
            for name, fn in cases.items():
                t = time.perf_counter()
                fn()
                samples[name].append(time.perf_counter() - t)
    print(json.dumps({name: statistics.median(v) for name, v in samples.items()}))
