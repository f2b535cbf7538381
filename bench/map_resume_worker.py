"""MPI side of bench/map_resume.py: resumable maps against the same maps without
checkpoints, interleaved in one job.  Prints one JSON object (rank 0)."""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

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
    def run():
        ckpt = parcomp.Checkpointer(fresh(name), handle_signals=False)
        if reduce:
            value = parcomp.map_reduce(fn, range(n), "sum", checkpoint=ckpt, **cadence)
        else:
            value = parcomp.map(fn, range(n), checkpoint=ckpt, **cadence)
        ckpt.close()
        SAVES.setdefault(name, []).append(ckpt.saves)
        return value

    return run


def timed(fn):
    comm.Barrier()
    t = time.perf_counter()
    fn()
    comm.Barrier()
    return time.perf_counter() - t


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
        fn()
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
    if comm.rank == 0:
        out = {k: statistics.median(v) for k, v in samples.items()}
        out["resume 10,000"] = statistics.median(resumes)
        out["saves"] = {k: statistics.median(v) for k, v in SAVES.items()}
        print(json.dumps(out))
        shutil.rmtree(ROOT, ignore_errors=True)


if __name__ == "__main__":
    main()
