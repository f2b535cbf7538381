"""What writing shards into their reservation (ReservedIO, h5py's fileobj driver) costs.

Run:  .venv/bin/python bench/reserved_io.py [--mib 128] [--repeats 9] [--dir out/bench-rio]

Same process, interleaved, medians: one 4 MiB-chunked float64 dataset written slab by
slab and fsynced, (a) by HDF5's own sec2 driver into a fresh file, as before, and (b)
through ReservedIO into a file reserved with posix_fallocate, then trimmed and fsynced,
as parcomp does now (so that a full disk is a clean error, not a segfault).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import h5py
import numpy as np
from _common import ROOT, machine

from parcomp.checkpoint.writer import ReservedIO, reserve_space


def write(fh: h5py.File, data: np.ndarray, rows: int) -> None:
    with fh:
        dset = fh.create_dataset(
            "u", shape=data.shape, dtype=data.dtype, chunks=(rows, data.shape[1])
        )
        for a in range(0, data.shape[0], rows):
            dset[a : a + rows] = data[a : a + rows]


def sec2(folder: Path, data: np.ndarray, rows: int) -> None:
    path = folder / "sec2.h5"
    write(h5py.File(path, "w"), data, rows)
    fd = os.open(path, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)


def reserved(folder: Path, data: np.ndarray, rows: int) -> None:
    path = reserve_space(folder, 0, int(data.nbytes * 1.01) + 64 * 1024)
    target = ReservedIO(path)
    try:
        write(h5py.File(target, "w"), data, rows)
    finally:
        target.finish()
    os.replace(path, folder / "reserved.h5")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--dir", type=Path, default=ROOT / "out" / "bench-rio")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    n = int(np.sqrt(args.mib * 2**20 / 8))
    data = np.random.default_rng(0).random((n, n))
    rows = max(1, 4 * 2**20 // (n * 8))
    times: dict[str, list[float]] = {"sec2 (before)": [], "ReservedIO (now)": []}
    for _ in range(args.repeats):
        for name, fn in (("sec2 (before)", sec2), ("ReservedIO (now)", reserved)):
            for old in args.dir.glob("*.h5"):
                old.unlink()
            t = time.perf_counter()
            fn(args.dir, data, rows)
            times[name].append(time.perf_counter() - t)
    with h5py.File(args.dir / "reserved.h5", "r") as fh:
        if not np.array_equal(fh["u"][...], data):
            raise SystemExit("ReservedIO wrote different data")
    print(f"machine: {machine()}")
    print(f"{data.nbytes / 2**20:.0f} MiB, {args.repeats} interleaved repeats, medians, {args.dir}")
    base = statistics.median(times["sec2 (before)"])
    for name, values in times.items():
        med = statistics.median(values)
        print(
            f"{name:18s} {med * 1e3:7.1f} ms  {data.nbytes / med / 2**30:5.2f} GiB/s  ratio {med / base:.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
