"""k-means job against a serial NumPy k-means from the same start."""

import numpy as np
from mpi4py import MPI

from parcomp.kernels import kmeans_stats_numpy
from parcomp.testing import parallel_assert


def test_kmeans_matches_serial_numpy(job):
    km = job("kmeans")
    points, _ = km.make_points(3000, 4, 2, seed=5)
    centroids, inertia, _done = km.kmeans(points, 4, 100, 1e-12, seed=5)
    data = points.gather(root=0)
    data = MPI.COMM_WORLD.bcast(data, root=0)
    # serial reference: the same seeding, then Lloyd iterations with the NumPy kernel
    chosen = [data[np.random.default_rng(6).integers(data.shape[0])]]
    nearest = np.full(data.shape[0], np.inf)
    for _ in range(3):
        nearest = np.minimum(nearest, ((data - chosen[-1]) ** 2).sum(axis=1))
        chosen.append(data[int(nearest.argmax())])
    ref = np.array(chosen)
    for _ in range(100):
        stats = kmeans_stats_numpy(data, ref)
        new = stats[:, :2] / np.maximum(stats[:, 2], 1)[:, None]
        moved = np.max(np.linalg.norm(new - ref, axis=1))
        ref, ref_inertia = new, stats[:, 3].sum()
        if moved <= 1e-12:
            break
    parallel_assert(np.allclose(centroids, ref, rtol=1e-9, atol=1e-9), f"{centroids} vs {ref}")
    parallel_assert(abs(inertia - ref_inertia) <= 1e-9 * ref_inertia)
