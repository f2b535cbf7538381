"""Bad host lists on the rig: a clear error before anything runs, and no process left on
any node.  (Before this work ``parcomp run`` had no host list at all; two machines with
one hostname ran, taken for one node.)"""

from __future__ import annotations

import pytest
from conftest import PARCOMP, ROOT, on, rig, wait_clean

NODES = ["node0", "node1", "node2", "node3"]


def run(hosts, ranks=2, option="--hosts"):
    return on("node0", [PARCOMP, "run", "-n", ranks, option, hosts, "--timeout", "40",
                        ROOT / "jobs/pi.py"], timeout=90)  # fmt: skip


@pytest.mark.parametrize(
    "hosts,ranks,message",
    [
        ("node0,nodeX", 2, "host list: host 'nodeX' does not exist (its name does not resolve)"),
        ("node0,node0", 2, "host list: 'node0' is listed twice"),
        ("node0,node1", 3, "host list: 2 slot(s) on 2 host(s) for -n 3 ranks"),
        ("node1:0", 1, "host 'node1' has slots '0'"),
    ],
)
def test_a_bad_host_list_is_refused_before_anything_runs(cluster, hosts, ranks, message):
    proc = run(hosts, ranks)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "pi ~=" not in proc.stdout
    assert not wait_clean(NODES, within=3)


def test_two_names_for_one_machine_are_refused(cluster):
    proc = run(f"node1,{rig.address('pc', 1)}")
    assert proc.returncode == 2
    assert f"'node1' and '{rig.address('pc', 1)}' are the same machine" in proc.stderr


def test_a_hostfile_is_read_and_checked(cluster, shared):
    good = shared / "hosts"
    good.write_text("# the allocation\nnode1 slots=2\nnode2:1\n")
    proc = on("node0", [PARCOMP, "run", "-n", 3, "--hostfile", good, "--timeout", "40",
                        ROOT / "jobs/pi.py"], timeout=90)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "3 ranks" in proc.stdout
    bad = shared / "bad"
    bad.write_text("node1\nnode1\n")
    proc = on("node0", [PARCOMP, "run", "-n", 2, "--hostfile", bad, "--timeout", "40",
                        ROOT / "jobs/pi.py"], timeout=90)  # fmt: skip
    assert proc.returncode == 2 and "'node1' is listed twice" in proc.stderr


def test_an_unreachable_host_is_named_before_anything_runs(cluster):
    rig.set_link("node2", "down")
    try:
        proc = run("node0,node2")
    finally:
        rig.set_link("node2", "up")
    assert proc.returncode == 2, proc.stderr
    assert "host list: cannot reach node2" in proc.stderr and "nothing was started" in proc.stderr
    assert not wait_clean(NODES, within=5)


def test_a_lost_host_is_named_before_anything_runs(cluster):
    rig.kill_node("node3")
    try:
        proc = run("node0,node3")
    finally:
        rig.revive("node3")
    assert proc.returncode == 2, proc.stderr
    assert "host list: cannot reach node3" in proc.stderr


def test_two_machines_with_one_hostname_are_refused(cluster):
    assert on("node3", ["hostname", "node2"]).returncode == 0
    try:
        proc = run(f"{rig.address('pc', 2)},{rig.address('pc', 3)}")
    finally:
        on("node3", ["hostname", "node3"])
    assert proc.returncode == 2, proc.stderr
    assert "2 different machines have the hostname 'node2'" in proc.stderr
    assert "pi ~=" not in proc.stdout
    assert not wait_clean(NODES, within=5)
