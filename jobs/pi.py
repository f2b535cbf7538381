"""Monte Carlo estimate of pi, identical on any number of ranks.

Run:  parcomp run -n 2 jobs/pi.py --samples 20000000

The samples are cut into fixed chunks, the work items of ``parcomp.map_reduce``; chunk
``i`` draws from its own random stream (``SeedSequence(seed, spawn_key=(i,))``), whichever
rank computes it under whichever schedule.  Hit counts are integers, so the sum is exact
and the estimate is bitwise identical on 1, 2, 3 or 4 ranks.
"""

from __future__ import annotations

import argparse
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


def estimate_pi(
    samples: int,
    chunk: int = 1_000_000,
    seed: int = 2026,
    comm=None,
    schedule: str = "block",
    progress: bool = False,
    checkpointer=None,
    batch: int = 0,
    die_at_batch: int | None = None,
) -> float:
    """Estimate pi from ``samples`` points; the same value on any rank count and schedule.

    With a ``checkpointer`` the chunks run in batches of ``batch``; after each batch the
    map/reduce progress (next chunk, hits so far) is checkpointed, and a re-run resumes
    after the last finished batch instead of redoing it.

    Notes
    -----
    Collective over `comm`: call on all ranks.
    """
    sizes = chunk_sizes(samples, chunk)
    nchunks = len(sizes)
    done, hits = 0, 0
    if checkpointer is not None:
        restored = checkpointer.restore(require={"samples": samples, "chunk": chunk})
        if restored is not None:
            done, hits = restored.scalars["next_chunk"], restored.scalars["hits"]
    step = max(1, batch) if checkpointer is not None and batch else nchunks
    number = done // step if step else 0
    while done < nchunks:
        stop = min(nchunks, done + step)
        hits += parcomp.map_reduce(
            lambda i: chunk_hits(seed, i, sizes[i]),
            range(done, stop),
            "sum",
            schedule=schedule,
            progress=progress,
            comm=comm,
        )
        done, number = stop, number + 1
        inject_failure(number, die_at_batch, 0, comm)
        if checkpointer is not None:
            checkpointer.save(
                number,
                scalars={"next_chunk": done, "hits": hits, "samples": samples, "chunk": chunk},
            )
    if checkpointer is not None:
        checkpointer.close()
    return 4.0 * hits / samples


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20_000_000, help="number of random points")
    parser.add_argument("--chunk", type=int, default=1_000_000, help="points per random stream")
    parser.add_argument("--seed", type=int, default=2026, help="root seed")
    parser.add_argument("--schedule", default="block", choices=["block", "cyclic", "dynamic"])
    parser.add_argument("--progress", action="store_true", help="progress bar on rank 0")
    parser.add_argument(
        "--checkpoint-dir", default=None, help="checkpoint the map/reduce progress here"
    )
    parser.add_argument("--batch", type=int, default=4, help="chunks per checkpointed batch")
    parser.add_argument(
        "--die-at-batch", type=int, default=None, help="fault injection (first attempt only)"
    )
    args = parser.parse_args(argv)
    if args.samples < 1 or args.chunk < 1:
        raise parcomp.ConfigError(
            f"--samples and --chunk must be positive, got {args.samples} and {args.chunk}"
        )
    log = parcomp.get_logger("parcomp.jobs.pi")
    t0 = time.perf_counter()
    ckpt = None
    if args.checkpoint_dir:
        from parcomp import Checkpointer

        ckpt = Checkpointer(args.checkpoint_dir)
    pi = estimate_pi(
        args.samples,
        args.chunk,
        args.seed,
        schedule=args.schedule,
        progress=args.progress,
        checkpointer=ckpt,
        batch=args.batch,
        die_at_batch=args.die_at_batch,
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
