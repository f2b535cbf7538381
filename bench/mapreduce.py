"""map/reduce on 2 ranks against its peers, all in one command.

Run:  .venv/bin/python bench/mapreduce.py [--repeats 7]

1. ``mpiexec -n 2 bench/mapreduce_worker.py``: parcomp (block, dynamic, deterministic)
   against a hand-written mpi4py static split in the same job; mandelbrot with block,
   cyclic and dynamic schedules; an 80 MB float64 sum against a raw ``Allreduce``.
2. ``multiprocessing.Pool(2).map`` in this process.
3. ``mpiexec -n 3 python -m mpi4py.futures bench/futures_worker.py`` (2 workers + 1 master).
Each case is the median of the repeats (interleaved within each peer's run).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import MPIEXEC, machine

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from tasks import medium, tiny  # noqa: E402


def pool_cases(repeats: int) -> dict[str, float]:
    with multiprocessing.get_context("fork").Pool(2) as pool:
        cases = {
            "tiny/multiprocessing.Pool(2)": lambda: sum(pool.map(tiny, range(10_000))),
            "medium/multiprocessing.Pool(2)": lambda: sum(
                pool.map(medium, range(100), chunksize=1)
            ),
        }
        for fn in cases.values():
            fn()
        samples: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(repeats):
            for name, fn in cases.items():
                t = time.perf_counter()
                fn()
                samples[name].append(time.perf_counter() - t)
    return {name: statistics.median(v) for name, v in samples.items()}


def mpi_json(argv: list[str]) -> dict[str, float]:
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=1200)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    r = str(args.repeats)
    results = mpi_json(
        [str(MPIEXEC), "-n", "2", sys.executable, str(HERE / "mapreduce_worker.py"), r]
    )
    results.update(pool_cases(args.repeats))
    results.update(
        mpi_json(
            [
                str(MPIEXEC),
                "-n",
                "3",
                sys.executable,
                "-m",
                "mpi4py.futures",
                str(HERE / "futures_worker.py"),
                r,
            ]
        )
    )
    try:  # optional peer: pip install "dask[distributed]" (the bench extra)
        import distributed  # noqa: F401

        results.update(mpi_json([sys.executable, str(HERE / "dask_peer.py"), r]))
    except ImportError:
        print("dask.distributed not installed: skipping that peer (pip install '.[bench]')")
    print(f"machine: {machine()}")
    print(f"2 ranks/workers, median of {args.repeats} repeats")
    for group in ("tiny", "medium", "mandelbrot", "reduce80MB"):
        print(f"-- {group}")
        for name in sorted(k for k in results if k.startswith(group + "/")):
            print(f"   {name.split('/', 1)[1]:34s} {results[name] * 1e3:10.2f} ms")

    def ratio(a: str, b: str) -> str:
        return f"{results[a] / results[b]:.3f}"

    print("ratios:")
    print(
        f"   tiny: parcomp block / hand static          {ratio('tiny/parcomp-block', 'tiny/hand-static')}  (goal <= 2)"
    )
    print(
        f"   medium: parcomp block / hand static        {ratio('medium/parcomp-block', 'medium/hand-static')}  (goal <= 1.05)"
    )
    print(
        f"   medium: dynamic / static (uniform work)    {ratio('medium/parcomp-dynamic', 'medium/parcomp-block')}  (goal <= 1.1)"
    )
    print(
        f"   mandelbrot: dynamic / static block         {ratio('mandelbrot/parcomp-dynamic', 'mandelbrot/parcomp-block')}  (goal < 1)"
    )
    print(
        f"   80 MB: map_reduce(out=) / raw Allreduce    {ratio('reduce80MB/parcomp.map_reduce-out', 'reduce80MB/raw-Allreduce')}  (goal <= 1.05)"
    )
    print(
        f"   80 MB: map_reduce / raw into a new array   {ratio('reduce80MB/parcomp.map_reduce-new-array', 'reduce80MB/raw-Allreduce-new-array')}"
    )
    print(
        f"   tiny: deterministic / block                {ratio('tiny/parcomp-deterministic', 'tiny/parcomp-block')}"
    )
    hand_eff = 100 * 0.010 / 2 / results["medium/hand-static"]
    print(f"   medium hand-static efficiency              {hand_eff:.3f}")


if __name__ == "__main__":
    main()
