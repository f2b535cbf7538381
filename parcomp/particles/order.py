"""Canonical order of particles: ``order_by`` keys must be unique (COMMUNICATES).

:class:`parcomp.particles.dist.DistParticles` keeps particles sorted by an integer key so that
results are the same bits on any rank count; two particles with one key would make the
order, and so the sums, depend on where they are.  Both checks raise on every rank.
"""

from __future__ import annotations

import numpy as np

from parcomp.particles.exchange import displs
from parcomp.particles.plan import Particles
from parcomp.runtime.agree import raise_if_any
from parcomp.runtime.errors import ConfigError

__all__ = ["check_unique_here", "check_unique_everywhere"]


def check_unique_here(p: Particles) -> None:
    """Raise on every rank if two particles on one rank share an ``order_by`` key (they
    are sorted by it).  Collective."""
    keys = p.fields[p.order_by]
    dup = np.flatnonzero(keys[1:] == keys[:-1])
    raise_if_any(
        None
        if dup.size == 0
        else ConfigError(
            f"order_by={p.order_by!r} must be unique per particle: rank {p.rank} "
            f"holds {dup.size + 1} or more with equal keys (first: {keys[dup[0]]!r}); "
            "results would depend on the rank count"
        ),
        p.comm,
    )


def check_unique_everywhere(p: Particles) -> None:
    """Raise on every rank if any two particles share an ``order_by`` key, wherever they
    are: keys travel to rank ``key mod size`` (one Alltoall of counts, one Alltoallv)
    and each rank checks its share.  Collective; done at construction."""
    from mpi4py import MPI

    keys = p.fields[p.order_by].astype(np.int64)
    size = p.partition.size
    dest = keys % size
    order = np.argsort(dest, kind="stable")
    counts = np.bincount(dest, minlength=size).astype(np.int64)
    rcounts = np.empty(size, np.int64)
    p.message_comm.Alltoall(counts, rcounts)
    got = np.empty(int(rcounts.sum()), np.int64)
    p.message_comm.Alltoallv(
        [keys[order], counts, displs(counts), MPI.INT64_T],
        [got, rcounts, displs(rcounts), MPI.INT64_T],
    )
    got.sort()
    dup = np.flatnonzero(got[1:] == got[:-1])
    raise_if_any(
        None
        if dup.size == 0
        else ConfigError(
            f"order_by={p.order_by!r} must be unique per particle: key "
            f"{int(got[dup[0]])} is held by more than one particle; results would depend "
            "on the rank count"
        ),
        p.comm,
    )
