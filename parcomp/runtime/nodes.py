"""Which node each rank runs on, and partner assignment across nodes.

PURE apart from reading the environment and the hostname; no communication.  The
collective part (gathering every rank's node name) lives with its callers.

Node identity is the hostname, overridable so that one machine can stand in for several
nodes in tests and demos:

``PARCOMP_NODE_NAME``
    This process's node name, verbatim (per process: set it with Hydra's or Open MPI's
    per-executable environment, or in a namespace with its own hostname).
``PARCOMP_EMULATE_NODES=k``
    Pretend that every ``k`` consecutive world ranks share a node:
    ``<hostname>-node<world_rank // k>``.  The name is fixed when the process starts, so it
    survives a shrink of the communicator after a failure (ULFM).
``PARCOMP_EMULATE_NODE_COUNT=m`` (``parcomp run --emulate-nodes m``)
    Pretend that the world ranks are spread over ``m`` nodes, as evenly as they go:
    ``<hostname>-node<world_rank * m // world_size>``.  More nodes than ranks is an error.

Partners follow SCR's PARTNER scheme: the nodes are ordered by their lowest rank; the
``i``-th rank of node ``k`` keeps a copy of its shard on the ``i``-th rank (modulo that
node's size) of node ``k + 1`` (cyclically).  A shard and its copy are therefore always on
different nodes, and losing one node loses no data; losing a node *and* the next one can.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Sequence

from parcomp.runtime import config
from parcomp.runtime.errors import ConfigError
from parcomp.runtime.ranks import world_rank_size

__all__ = ["node_name", "node_groups", "partner_ranks", "safe_node_dirname"]

_cached: str | None = None


def node_name() -> str:
    """This process's node name (hostname unless overridden; see the module notes).

    Computed once per process, from the environment and the *world* rank, so it does not
    change when the job's communicator is shrunk or renumbered.
    """
    global _cached
    if _cached is None:
        _cached = _compute_node_name()
    return _cached


def _compute_node_name() -> str:
    explicit = (config.get("PARCOMP_NODE_NAME") or "").strip()
    if explicit:
        return explicit
    host = socket.gethostname() or "localhost"
    count = config.get("PARCOMP_EMULATE_NODE_COUNT")
    if count is not None:
        world_rank, world_size = world_rank_size()
        if count > world_size:
            raise ConfigError(
                f"PARCOMP_EMULATE_NODE_COUNT={count}: more emulated nodes than the "
                f"{world_size} rank(s) of the job"
            )
        return f"{host}-node{world_rank * count // world_size}"
    emulate = config.get("PARCOMP_EMULATE_NODES")
    if emulate is not None:
        world_rank, _ = world_rank_size()
        return f"{host}-node{world_rank // emulate}"
    return host


def node_groups(names: Sequence[str]) -> list[list[int]]:
    """Ranks grouped by node, nodes ordered by their lowest rank; ranks ascending in each.

    >>> node_groups(["b", "a", "b", "a", "c"])
    [[0, 2], [1, 3], [4]]
    """
    groups: dict[str, list[int]] = {}
    for rank, name in enumerate(names):
        groups.setdefault(name, []).append(rank)
    return list(groups.values())


def partner_ranks(names: Sequence[str]) -> list[int | None]:
    """For every rank, the rank that keeps a copy of its shard (None on a single node).

    >>> partner_ranks(["a", "a", "b", "b"])
    [2, 3, 0, 1]
    >>> partner_ranks(["a", "a", "a"])
    [None, None, None]
    """
    groups = node_groups(names)
    if len(groups) < 2:
        return [None] * len(names)
    partner: list[int | None] = [None] * len(names)
    for k, group in enumerate(groups):
        following = groups[(k + 1) % len(groups)]
        for i, rank in enumerate(group):
            partner[rank] = following[i % len(following)]
    return partner


_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def safe_node_dirname(name: str) -> str:
    """A directory name for a node: ``node-<name>`` with unsafe characters replaced."""
    cleaned = _UNSAFE.sub("_", name).lstrip(".") or "unnamed"
    return f"node-{cleaned}"
