"""The two-hop shuffle's routing (parcomp.mapreduce.keyed.hop_plan), for every p up to 130: every
(source, destination) pair has exactly one path, source -> relay in the source's group
-> destination, and both ends of hop 2 agree on it."""

import math

import pytest

from parcomp.mapreduce.transport import hop_plan


@pytest.mark.parametrize("p", [*range(1, 71), 99, 100, 101, 128, 130])
def test_every_pair_is_routed_once_and_the_two_ends_agree(p):
    plans = [hop_plan(p, r) for r in range(p)]
    group_of = plans[0][0]
    assert all(plan[0] == group_of for plan in plans) and len(group_of) == p
    members = {}
    for r, A in enumerate(group_of):
        members.setdefault(A, []).append(r)
    assert max(map(len, members.values())) - min(map(len, members.values())) <= 1
    for s in range(p):
        A = group_of[s]
        for d in range(p):
            relay = members[A][group_of[d] % len(members[A])]  # what Hops.relay picks
            assert group_of[relay] == A  # hop 1 stays in the group
            assert d in plans[relay][1]  # the relay sends to d in hop 2
            assert relay in plans[d][2]  # and d expects it
    for r, (_, dests, sources) in enumerate(plans):
        assert len(set(dests)) == len(dests) and len(set(sources)) == len(sources)
        # hop 2's graph is consistent: r sends to t iff t lists r as a source
        for t in dests:
            assert r in plans[t][2]
        # messages per rank: about 2 sqrt(p), not p - 1
        hop1 = len(members[group_of[r]]) - 1
        assert len(dests) + hop1 <= 3 * math.isqrt(p) + 4, (len(dests), hop1)
