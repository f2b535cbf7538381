"""MPI side of bench/map_resume.py: resumable maps against the same maps without
checkpoints, interleaved in one job.  Prints one JSON object (rank 0)."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from mpi4py import MPI

import parcomp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tasks import medium, small, tiny

comm = MPI.COMM_WORLD
REPEATS = int(sys.argv[1]) if len(sys.argv) > 1 else 7
ROOT = Path(
    comm.bcast(tempfile.mkdtemp(prefix="map-resume-", dir="/tmp") if comm.rank == 0 else None)
)
SAVES: dict[str, list[int]] = {}


def fresh(name: str) -> Path:
    """An empty progress folder (no resume: every repeat computes everything)."""
    where = ROOT / name
    if comm.rank == 0:
        shutil.rmtree(where, ignore_errors=True)
    comm.Barrier()
    return where


def with_checkpoint(name, fn, n, reduce, **cadence):
    """The map with commits into an empty folder; emptying it (last repeat's progress) is
    done before the clock starts: a user's first call does not delete anything."""

    def run(where):
        ckpt = parcomp.Checkpointer(where, handle_signals=False)
        if reduce:
            value = parcomp.map_reduce(fn, range(n), "sum", checkpoint=ckpt, **cadence)
        else:
            value = parcomp.map(fn, range(n), checkpoint=ckpt, **cadence)
        ckpt.close()
        SAVES.setdefault(name, []).append(ckpt.saves)
        return value

    run.prepare = lambda: fresh(name)
    return run


def timed(fn):
    args = (fn.prepare(),) if hasattr(fn, "prepare") else ()
    comm.Barrier()
    t = time.perf_counter()
    fn(*args)
    comm.Barrier()
    return time.perf_counter() - t


def commit_times() -> tuple[list[float], list[float]]:
    """Checkpointer.save of a small per-rank record: back to back, and after 0.5 s of
    spinning (as a map's commit comes after its round's compute)."""
    record = np.frombuffer(b"x" * 3000, dtype=np.uint8)
    ckpt = parcomp.Checkpointer(fresh("commits"), handle_signals=False, keep=2)
    warm: list[float] = []
    cold: list[float] = []
    for i in range(2 * REPEATS + 2):
        spin = 0.5 if i % 2 else 0.0
        end = time.perf_counter() + spin
        while time.perf_counter() < end:
            pass
        comm.Barrier()
        t = time.perf_counter()
        ckpt.save(i, local={"records": record}, meta={"bench": 1})
        comm.Barrier()
        if i >= 2:
            (cold if spin else warm).append(time.perf_counter() - t)
    ckpt.close()
    return warm, cold


def fsync_times() -> tuple[float, float]:
    """Rank 0: a bare 4 kB write + fsync (no parcomp), back to back and after 0.5 s idle:
    how cold this machine's I/O path gets between rounds (medians, seconds)."""
    warm: list[float] = []
    cold: list[float] = []
    path = ROOT / "fsync-probe"
    for i in range(2 * REPEATS + 2):
        if i % 2:
            time.sleep(0.5)
        t = time.perf_counter()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, b"x" * 4096)
        os.fsync(fd)
        os.close(fd)
        if i >= 2:
            (cold if i % 2 else warm).append(time.perf_counter() - t)
    return statistics.median(warm), statistics.median(cold)


def main() -> None:
    cases = {
        "medium/plain": lambda: parcomp.map_reduce(medium, range(100)),
        "medium/every 2 s": with_checkpoint("medium", medium, 100, True, every_seconds=2.0),
        "long/plain": lambda: parcomp.map_reduce(medium, range(1000)),
        "long/every 2 s": with_checkpoint("long", medium, 1000, True, every_seconds=2.0),
        "tiny/plain": lambda: parcomp.map(tiny, range(10_000)),
        "tiny/every 1000": with_checkpoint("tiny", tiny, 10_000, False, every_items=1000),
        "small/plain": lambda: parcomp.map(small, range(10_000)),
        "small/every 1000": with_checkpoint("small", small, 10_000, False, every_items=1000),
    }
    for fn in cases.values():
        fn(*((fn.prepare(),) if hasattr(fn, "prepare") else ()))
    SAVES.clear()
    samples: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(REPEATS):
        for name, fn in cases.items():
            samples[name].append(timed(fn))
    # resume of 10,000 committed items (nothing left to run): the whole call
    done = ROOT / "resume"
    parcomp.map(small, range(10_000), checkpoint=done, every_items=1000)
    resumes = [
        timed(lambda: parcomp.map(small, range(10_000), checkpoint=done)) for _ in range(REPEATS)
    ]
    # one commit of the engine alone (a 3 kB record per rank), back to back and after
    # 0.5 s of compute: what a commit costs depends on how long the disk path sat idle
    warm, cold = commit_times()
    if comm.rank == 0:
        bare = fsync_times()
        out = {k: statistics.median(v) for k, v in samples.items()}
        out["resume 10,000"] = statistics.median(resumes)
        out["commit warm"], out["commit cold"] = statistics.median(warm), statistics.median(cold)
        out["fsync warm"], out["fsync cold"] = bare
        out["saves"] = {k: statistics.median(v) for k, v in SAVES.items()}
        print(json.dumps(out))
        shutil.rmtree(ROOT, ignore_errors=True)


if __name__ == "__main__":
    main()
