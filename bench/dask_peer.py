"""dask.distributed peer for bench/mapreduce.py: a LocalCluster of 2 single-threaded workers.

Prints one JSON line with the median seconds of the tiny and medium task cases.
"""

import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tasks import medium, tiny

if __name__ == "__main__":
    from distributed import Client, LocalCluster

    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            host="127.0.0.1",
        ) as cluster,
        Client(cluster) as client,
    ):
        cases = {
            "tiny/dask.distributed": lambda: sum(client.gather(client.map(tiny, range(10_000)))),
            "medium/dask.distributed": lambda: sum(
                client.gather(client.map(medium, range(100), pure=False))
            ),
        }
        for fn in cases.values():
            fn()
        samples = {name: [] for name in cases}
        for _ in range(repeats):
            for name, fn in cases.items():
                t = time.perf_counter()
                fn()
                samples[name].append(time.perf_counter() - t)
    print(json.dumps({k: statistics.median(v) for k, v in samples.items()}))
