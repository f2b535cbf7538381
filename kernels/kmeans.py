"""k-means assignment kernel (PURE): per-cluster sums and counts of a block of points."""

from __future__ import annotations

import numpy as np

from parcomp.runtime.numba_jit import jit

__all__ = ["kmeans_stats", "kmeans_stats_numpy"]


@jit
def kmeans_stats(points, centroids):
    """Row ``c`` of the result: ``[sum of points nearest centroid c..., count, sum of sq. distances]``."""
    k, d = centroids.shape
    out = np.zeros((k, d + 2))
    for i in range(points.shape[0]):
        best = 0
        best_d = np.inf
        for c in range(k):
            dist = 0.0
            for j in range(d):
                diff = points[i, j] - centroids[c, j]
                dist += diff * diff
            if dist < best_d:
                best_d = dist
                best = c
        for j in range(d):
            out[best, j] += points[i, j]
        out[best, d] += 1.0
        out[best, d + 1] += best_d
    return out


def kmeans_stats_numpy(points: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """NumPy version of :func:`kmeans_stats` (same first-minimum tie rule)."""
    dist = ((points[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=2)
    nearest = dist.argmin(axis=1)
    k, d = centroids.shape
    out = np.zeros((k, d + 2))
    for c in range(k):
        mine = nearest == c
        out[c, :d] = points[mine].sum(axis=0)
        out[c, d] = mine.sum()
        out[c, d + 1] = dist[mine, c].sum()
    return out
