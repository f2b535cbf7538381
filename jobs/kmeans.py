"""k-means clustering of a distributed point cloud by iterated allreduce of centroids.

Run:  parcomp run -n 2 jobs/kmeans.py [--points 400000] [--k 8] [--dim 3]

The points (Gaussian blobs around ``k`` random centres, generated from the global point
index so the data are the same on any rank count) live in a DistArray split by rows.
Every iteration, ``parcomp.map_reduce`` runs the Numba kernel on each rank's block to get
per-cluster sums, counts and squared distances, combines them with one buffer
``Allreduce``, and every rank updates the centroids.  Stops when no centroid moves more
than ``--tol``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import parcomp
from parcomp import DistArray
from parcomp.kernels import kmeans_stats
from parcomp.testing import inject_failure


def make_points(n: int, k: int, dim: int, seed: int, comm=None) -> tuple[DistArray, np.ndarray]:
    """Blob data as a DistArray of shape (n, dim), and the true centres."""
    centres = np.random.default_rng(seed).uniform(-10, 10, (k, dim))

    def f(i: np.ndarray, j: np.ndarray) -> np.ndarray:
        rows = i[:, 0]
        out = np.empty(i.shape)
        for r_local, r in enumerate(rows):
            rng = np.random.default_rng([seed, int(r)])
            out[r_local] = centres[r % k] + rng.standard_normal(dim)
        return out

    return DistArray.fromfunction(f, (n, dim), dims=(None, 1), comm=comm), centres


def kmeans(
    points: DistArray,
    k: int,
    iterations: int,
    tol: float,
    seed: int,
    checkpointer=None,
    die_at_iteration: int | None = None,
):
    """Run k-means; returns ``(centroids, inertia, iterations_done)`` on every rank.

    Notes
    -----
    Collective over the array's communicator.
    """
    log = parcomp.get_logger("parcomp.jobs.kmeans")
    dim = points.global_shape[1]
    inertia = np.inf
    first_it = 1
    restored = checkpointer.restore() if checkpointer is not None else None
    if restored is not None:  # centroids are exact: JSON keeps every float64 bit
        centroids = np.array(restored.scalars["centroids"], dtype=np.float64)
        inertia, first_it = restored.scalars["inertia"], restored.step + 1
        log.info("resumed after iteration %d", restored.step)
        if restored.scalars.get("converged"):
            return centroids, inertia, restored.step
    else:
        first = points.gather(root=0)  # seeding looks at all points on rank 0 (fine for a demo)
        init = None
        if points.rank == 0:  # farthest-point seeding from a random start, broadcast to all
            chosen = [first[np.random.default_rng(seed + 1).integers(first.shape[0])]]
            nearest = np.full(first.shape[0], np.inf)
            for _ in range(1, k):
                nearest = np.minimum(nearest, ((first - chosen[-1]) ** 2).sum(axis=1))
                chosen.append(first[int(nearest.argmax())])
            init = np.array(chosen)
        centroids = points.comm.bcast(init, root=0)
    for it in range(first_it, iterations + 1):
        stats = parcomp.map_reduce(lambda block, c=centroids: kmeans_stats(block, c), points, "sum")
        counts = stats[:, dim]
        new = np.where(
            counts[:, None] > 0, stats[:, :dim] / np.maximum(counts, 1)[:, None], centroids
        )
        shift = float(np.max(np.linalg.norm(new - centroids, axis=1)))
        centroids, inertia = new, float(stats[:, dim + 1].sum())
        log.info("iteration %d: inertia %.6g, max centroid shift %.3g", it, inertia, shift)
        inject_failure(it, die_at_iteration, 0, points.comm)
        if checkpointer is not None:
            checkpointer.save(
                it, scalars={"centroids": centroids, "inertia": inertia, "converged": shift <= tol}
            )
        if shift <= tol:
            return centroids, inertia, it
    return centroids, inertia, iterations


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=400_000)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--dim", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--tol", type=float, default=1e-9)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--checkpoint-dir", default=None, help="checkpoint the centroids here each iteration"
    )
    parser.add_argument(
        "--die-at-iteration", type=int, default=None, help="fault injection (first attempt only)"
    )
    args = parser.parse_args(argv)
    if args.k < 1 or args.points < args.k or args.dim < 1:
        raise parcomp.ConfigError(
            f"need 1 <= k <= points and dim >= 1, got k={args.k}, points={args.points}, dim={args.dim}"
        )
    t0 = time.perf_counter()
    points, truth = make_points(args.points, args.k, args.dim, args.seed)
    ckpt = None
    if args.checkpoint_dir:
        from parcomp import Checkpointer

        ckpt = Checkpointer(args.checkpoint_dir)
    centroids, inertia, done = kmeans(
        points,
        args.k,
        args.iterations,
        args.tol,
        args.seed,
        checkpointer=ckpt,
        die_at_iteration=args.die_at_iteration,
    )
    if ckpt is not None:
        ckpt.close()
    if points.rank == 0:
        err = max(np.min(np.linalg.norm(centroids - t, axis=1)) for t in truth)
        print(
            f"k-means: {args.points} points, k={args.k}, dim={args.dim}, {parcomp.size()} ranks, "
            f"{done} iterations, {time.perf_counter() - t0:.2f} s"
        )
        print(f"inertia = {inertia:.6f}; farthest true centre from a centroid: {err:.3f}")
        for c in centroids[np.lexsort(centroids.T[::-1])]:
            print("  " + " ".join(f"{v:9.4f}" for v in c))


if __name__ == "__main__":
    main()
