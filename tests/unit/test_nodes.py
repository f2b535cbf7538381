"""Node identity and partner assignment (pure)."""

import itertools
import random

import pytest

from parcomp.runtime import nodes
from parcomp.runtime.errors import ConfigError


@pytest.fixture(autouse=True)
def fresh_cache(monkeypatch):
    monkeypatch.setattr(nodes, "_cached", None)
    for var in ("PARCOMP_NODE_NAME", "PARCOMP_EMULATE_NODES", "PMI_RANK", "PMI_SIZE"):
        monkeypatch.delenv(var, raising=False)
    yield
    nodes._cached = None


def layouts():
    """Rank -> node name lists: regular, irregular, interleaved, up to 9 ranks."""
    rnd = random.Random(7)
    out = []
    for size in range(1, 10):
        for k in range(1, size + 1):
            out.append([f"n{r // k}" for r in range(size)])  # blocks of k
        for _ in range(5):
            out.append([f"h{rnd.randrange(4)}" for _ in range(size)])  # any mapping
    return out


@pytest.mark.parametrize("names", layouts())
def test_partner_is_on_another_node_and_every_shard_has_one_copy(names):
    partner = nodes.partner_ranks(names)
    groups = nodes.node_groups(names)
    assert sorted(itertools.chain(*groups)) == list(range(len(names)))
    if len(groups) == 1:
        assert partner == [None] * len(names)
        return
    for rank, p in enumerate(partner):
        assert p is not None and 0 <= p < len(names)
        assert names[p] != names[rank], (names, rank, p)
    # Losing any one node leaves a copy of every shard on a surviving node.
    for lost in set(names):
        for rank, p in enumerate(partner):
            assert names[rank] != lost or names[p] != lost


def test_partner_follows_the_next_node_cyclically():
    names = ["a", "a", "b", "b", "c"]
    assert nodes.node_groups(names) == [[0, 1], [2, 3], [4]]
    # a's ranks -> b's ranks by position; b's -> c (one rank); c -> a's first rank
    assert nodes.partner_ranks(names) == [2, 3, 4, 4, 0]


def test_node_name_defaults_to_the_hostname(monkeypatch):
    monkeypatch.setattr(nodes.socket, "gethostname", lambda: "cn042")
    assert nodes.node_name() == "cn042"


def test_node_name_override_and_emulation(monkeypatch):
    monkeypatch.setattr(nodes.socket, "gethostname", lambda: "box")
    monkeypatch.setenv("PARCOMP_NODE_NAME", "rack3-n7")
    assert nodes.node_name() == "rack3-n7"
    monkeypatch.setattr(nodes, "_cached", None)
    monkeypatch.delenv("PARCOMP_NODE_NAME")
    monkeypatch.setenv("PARCOMP_EMULATE_NODES", "2")
    names = []
    for world_rank in range(5):
        monkeypatch.setattr(nodes, "_cached", None)
        monkeypatch.setattr(nodes, "world_rank_size", lambda r=world_rank: (r, 5))
        names.append(nodes.node_name())
    assert names == ["box-node0", "box-node0", "box-node1", "box-node1", "box-node2"]


@pytest.mark.parametrize("bad", ["0", "-1", "two"])
def test_bad_emulation_setting_is_named(monkeypatch, bad):
    monkeypatch.setenv("PARCOMP_EMULATE_NODES", bad)
    with pytest.raises(ConfigError, match="PARCOMP_EMULATE_NODES"):
        nodes.node_name()


@pytest.mark.parametrize(
    "name, expected",
    [("cn01", "node-cn01"), ("a/b", "node-a_b"), ("..", "node-unnamed"), ("x y", "node-x_y")],
)
def test_node_dirname_is_a_plain_name(name, expected):
    assert nodes.safe_node_dirname(name) == expected
