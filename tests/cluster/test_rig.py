"""The rig itself: nodes separate in network, storage and processes; up/down idempotent
and leaving nothing behind (a second, 2-node cluster named ``t``, beside the session's)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import HERE, on, rig

NAME = "t"


def exec_t(node, *argv, timeout=30):
    return subprocess.run(
        [sys.executable, str(HERE / "cluster.py"), "--name", NAME, "exec", node, *argv],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def traces(state) -> dict:
    """What a cluster leaves on the host: processes, links, mounts, folders."""
    pids = [state["agent"]] + [v["pid"] for v in state["nodes"].values()]
    pids += [v["unshare"] for v in state["nodes"].values()]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    mounts = open("/proc/self/mountinfo").read()
    return {
        "processes": [p for p in pids if p and rig._alive(p) and not rig._zombie(p)],
        "links": [w for w in links.split() if w.rstrip(":").split("@")[0].endswith(f"-{NAME}")],
        "mounts": [line for line in mounts.splitlines() if f"parcomp-cluster/{NAME}" in line],
        "folders": [p for p in (rig.state_dir(NAME), rig.SHARED_ROOT / NAME) if p.exists()],
    }


def test_up_and_down_are_idempotent_and_leave_nothing(cluster):
    rig.down(NAME)
    first = rig.up(2, name=NAME)
    again = rig.up(2, name=NAME)  # kept, not rebuilt
    assert again["nodes"] == first["nodes"]
    assert exec_t("node1", "hostname").stdout.strip() == "node1"
    rig.down(NAME)
    assert traces(first) == {"processes": [], "links": [], "mounts": [], "folders": []}
    rig.down(NAME)  # again: nothing to do, no error
    # a node already lost (killed) is torn down as well
    state = rig.up(2, name=NAME)
    rig.kill_node("node1", name=NAME)
    rig.down(NAME)
    assert traces(state) == {"processes": [], "links": [], "mounts": [], "folders": []}


def test_nodes_have_their_own_hostname_address_and_link(cluster):
    for i, node in enumerate(cluster["nodes"]):
        out = on(node, ["sh", "-c", "hostname; ip -o -4 addr show eth0; tc qdisc show dev eth0"])
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert lines[0] == node
        assert f"inet {rig.address('pc', i)}/24" in lines[1]
        assert "tbf" in lines[2] and "rate 2Gbit" in lines[2]
    # the host is not on the rig's network: the bridge has no address
    bridge = subprocess.run(
        ["ip", "-o", "addr", "show", cluster["bridge"]], capture_output=True, text=True
    ).stdout
    assert "inet " not in bridge


def test_a_node_sees_only_its_own_processes(cluster):
    holder = subprocess.Popen(
        [sys.executable, str(HERE / "cluster.py"), "exec", "node0", "sleep", "30"],
        stdin=subprocess.DEVNULL,
    )
    try:
        time.sleep(1)
        assert "sleep 30" in on("node0", ["ps", "-eo", "args="]).stdout
        seen = on("node1", ["ps", "-eo", "args="]).stdout
        assert "sleep 30" not in seen
        kill = on("node1", ["pkill", "-f", "sleep 30"])
        assert kill.returncode == 1  # nothing matched: invisible, so unsignallable
        assert holder.poll() is None
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("folder", ["/tmp", "/dev/shm"])
def test_node_local_storage_is_private_and_dies_with_the_node(cluster, folder):
    assert on("node2", ["sh", "-c", f"echo here > {folder}/mark"]).returncode == 0
    assert on("node2", ["cat", f"{folder}/mark"]).stdout == "here\n"
    assert on("node3", ["ls", f"{folder}/mark"]).returncode != 0
    assert not os.path.exists(f"{folder}/mark")  # not the host's either
    on("node2", ["rm", f"{folder}/mark"])


def test_the_shared_folder_is_the_same_on_every_node(shared):
    assert on("node0", ["sh", "-c", f"echo from-node0 > {shared}/f"]).returncode == 0
    for node in ("node1", "node2", "node3"):
        assert on(node, ["cat", f"{shared}/f"]).stdout == "from-node0\n"


def test_bytes_between_nodes_cross_the_rate_limited_link(cluster, shared):
    """8 MiB each way between node0 and node1 through MPI: node1's link counts them, at no
    more than the link's rate."""
    script = shared / "ring.py"
    script.write_text(
        "import time\nimport numpy as np\nfrom mpi4py import MPI\nc = MPI.COMM_WORLD\n"
        "x = np.ones(1 << 20); y = np.empty_like(x)\nc.Barrier(); t = time.perf_counter()\n"
        "for _ in range(4):\n    c.Sendrecv(x, 1 - c.rank, recvbuf=y, source=1 - c.rank)\n"
        "dt = time.perf_counter() - t\nif c.rank == 0: print(f'seconds {dt}')\n"
    )
    veth = cluster["nodes"]["node1"]["veth"]

    def tx_rx():
        out = subprocess.run(
            ["ip", "-s", "-j", "link", "show", veth], capture_output=True, text=True
        ).stdout
        stats = json.loads(out)[0]["stats64"]
        return stats["tx"]["bytes"], stats["rx"]["bytes"]

    before = tx_rx()
    mpiexec = Path(sys.executable).parent / "mpiexec"
    proc = on("node0", [mpiexec, "-hosts", "node0,node1", "-n", "2", sys.executable, script])
    assert proc.returncode == 0, proc.stderr
    after = tx_rx()
    assert after[0] - before[0] >= 4 * 8 * 2**20 and after[1] - before[1] >= 4 * 8 * 2**20
    seconds = float(proc.stdout.split()[-1])
    assert 4 * 8 * 2**20 * 8 / seconds <= 2.2e9  # at most the 2 Gbit/s of the link
