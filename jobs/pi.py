"""Monte Carlo estimate of pi, identical on any number of ranks.

Run:  parcomp run -n 2 jobs/pi.py --samples 20000000
      parcomp run -n 2 jobs/pi.py --samples 4000000000 --checkpoint-dir out/pi --every-seconds 30

The samples are cut into fixed chunks, the work items of ``parcomp.map_reduce``; chunk
``i`` draws from its own random stream (``SeedSequence(seed, spawn_key=(i,))``), whichever
rank computes it under whichever schedule.  Hit counts are integers, so the sum is exact
and the estimate is bitwise identical on 1, 2, 3 or 4 ranks.  With ``--checkpoint-dir`` the
map/reduce commits its progress (``parcomp.map_reduce(checkpoint=...)``): a job killed or
preempted and run again, on any rank count, skips the chunks already counted.
"""

from __future__ import annotations

import argparse
import functools
import math
import time

import numpy as np

import parcomp
from parcomp.testing import inject_failure


def chunk_hits(seed: int, chunk: int, count: int) -> int:
    """Number of points of chunk ``chunk`` (``count`` points) inside the unit quarter circle."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(chunk,))))
    xy = rng.random((count, 2))
    return int(np.count_nonzero(np.einsum("ij,ij->i", xy, xy) <= 1.0))


def chunk_sizes(samples: int, chunk: int) -> list[int]:
    """Sizes of the fixed chunks that ``samples`` points are cut into."""
    full, rest = divmod(samples, chunk)
    return [chunk] * full + ([rest] if rest else [])


#: Fault injection (``--die-at-chunk``): the rank that runs this chunk is killed on the
#: first attempt of the job.  A module setting, so that the mapper stays the same call.
DIE_AT_CHUNK: int | None = None


def hits_of_chunk(i: int, seed: int, chunk: int, samples: int) -> int:
    """Hits of chunk ``i`` of the fixed chunks of ``samples`` points (the map's mapper)."""
    inject_failure(i, DIE_AT_CHUNK, parcomp.rank())
    return chunk_hits(seed, i, min(chunk, samples - i * chunk))


def estimate_pi(
    samples: int,
    chunk: int = 1_000_000,
    seed: int = 2026,
    comm=None,
    schedule: str = "block",
    progress: bool = False,
    checkpoint=None,
    every_items: int | None = None,
    every_seconds: float | None = None,
) -> float:
    """Estimate pi from ``samples`` points; the same value on any rank count and schedule.

    With ``checkpoint`` (a folder or a :class:`parcomp.Checkpointer`) the map/reduce
    commits the finished chunks' hits every ``every_items`` chunks or ``every_seconds``
    seconds; a rerun of the same estimate (same samples, chunk and seed) skips them, on
    any rank count, and a preemption signal commits and exits with status 75.

    Notes
    -----
    Collective over `comm`: call on all ranks.
    """
    nchunks = len(chunk_sizes(samples, chunk))
    mapper = functools.partial(hits_of_chunk, seed=seed, chunk=chunk, samples=samples)
    hits = parcomp.map_reduce(
        mapper,
        range(nchunks),
        "sum",
        schedule=schedule,
        progress=progress,
        checkpoint=checkpoint,
        every_items=every_items,
        every_seconds=every_seconds,
        comm=comm,
    )
    return 4.0 * hits / samples


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20_000_000, help="number of random points")
    parser.add_argument("--chunk", type=int, default=1_000_000, help="points per random stream")
    parser.add_argument("--seed", type=int, default=2026, help="root seed")
    parser.add_argument("--schedule", default="block", choices=["block", "cyclic", "dynamic"])
    parser.add_argument("--progress", action="store_true", help="progress bar on rank 0")
    parser.add_argument(
        "--checkpoint-dir", default=None, help="commit the map/reduce progress to this folder"
    )
    parser.add_argument("--every-items", type=int, default=None, help="chunks per commit")
    parser.add_argument("--every-seconds", type=float, default=None, help="seconds between commits")
    parser.add_argument(
        "--die-at-chunk",
        type=int,
        default=None,
        help="fault injection: kill the rank running this chunk (first attempt only)",
    )
    args = parser.parse_args(argv)
    if args.samples < 1 or args.chunk < 1:
        raise parcomp.ConfigError(
            f"--samples and --chunk must be positive, got {args.samples} and {args.chunk}"
        )
    log = parcomp.get_logger("parcomp.jobs.pi")
    t0 = time.perf_counter()
    global DIE_AT_CHUNK
    DIE_AT_CHUNK = args.die_at_chunk
    if args.checkpoint_dir is None and (args.every_items or args.every_seconds):
        raise parcomp.ConfigError("--every-items/--every-seconds go with --checkpoint-dir")
    pi = estimate_pi(
        args.samples,
        args.chunk,
        args.seed,
        schedule=args.schedule,
        progress=args.progress,
        checkpoint=args.checkpoint_dir,
        every_items=args.every_items,
        every_seconds=args.every_seconds,
    )
    elapsed = time.perf_counter() - t0
    if parcomp.rank() == 0:
        log.info("%d samples on %d ranks in %.2f s", args.samples, parcomp.size(), elapsed)
        print(
            f"pi ~= {pi:.10f}  (error {pi - math.pi:+.2e}, {args.samples} samples, "
            f"{parcomp.size()} ranks, {elapsed:.2f} s)"
        )


if __name__ == "__main__":
    main()
