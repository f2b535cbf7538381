"""Per-node state and security on real nodes: one kernel cache per node, node-local
checkpoints in each node's own /dev/shm (0700), one dynamic-schedule counter per node,
what listens on which interface during a job, and the folder checks on every node."""

from __future__ import annotations

import os
import re
import time

from conftest import PARCOMP, ROOT, on, rig, start

HOSTS = "node0:2,node1:2,node2:1"
NODES = ["node0", "node1", "node2"]


def test_one_counter_per_node_shared_by_that_nodes_ranks(cluster, shared):
    proc = on("node0", [PARCOMP, "run", "-n", 5, "--hosts", HOSTS, "--timeout", 60,
                        ROOT / "tests/cluster/scripts/per_node.py"], cwd=shared)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "counters: node0=2:200, node1=2:200, node2=1:100" in proc.stdout
    assert "ranks: node0,node0,node1,node1,node2" in proc.stdout
    assert "map agrees: True" in proc.stdout


def test_one_kernel_cache_and_own_checkpoints_per_node(cluster, shared):
    for node in NODES:  # fresh node-local storage: no cache, no checkpoint
        on(node, ["sh", "-c", "rm -rf /dev/shm/parcomp-* /dev/shm/ck"])
    proc = on("node0", [PARCOMP, "run", "-n", 5, "--hosts", HOSTS, "--timeout", 100,
                        ROOT / "jobs/heat2d.py", "--n", "128", "--steps", "100",
                        "--checkpoint-dir", shared / "ck", "--local-dir", "/dev/shm/ck",
                        "--checkpoint-every", "50", "--out", shared / "out", "--no-png"],
              cwd=shared)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    kernels = set()
    for node in NODES:
        listing = on(node, ["sh", "-c", "cd /dev/shm && find parcomp-* -maxdepth 1 -mindepth 1 "
                                        "-printf '%f %m\\n'"]).stdout.split("\n")  # fmt: skip
        folders = [line for line in listing if line]
        assert folders == [f"node-{node} 700"], (node, folders)  # one cache, this node's, 0700
        files = on(node, ["sh", "-c", "find /dev/shm/parcomp-* -name '*.nbi' | sort"]).stdout
        names = {f.rsplit("/", 1)[1] for f in files.split()}
        assert names, node
        kernels.add(frozenset(names))
        ck = on(node, ["sh", "-c", "cd /dev/shm/ck && find . -maxdepth 1 -mindepth 1 -printf "
                                   "'%f %m\\n' && ls node-*/step-00000100"]).stdout  # fmt: skip
        lines = ck.split("\n")
        assert lines[0] == f"node-{node} 700", (node, ck)  # only its own folder, private
        shards = [x for x in lines[1:] if x.startswith("shard-")]
        # its ranks' shards and the copies it keeps for the previous node
        assert len(shards) == {"node0": 2 + 1, "node1": 2 + 2, "node2": 1 + 2}[node], (node, ck)
    assert len(kernels) == 1  # every node cached the same kernels, once each


def test_what_listens_where_during_a_multinode_job(cluster, shared):
    """parcomp opens no socket; Hydra's mpiexec (first node, all interfaces) and proxies
    share one control port; the ranks' UCX listeners are on the node's rig address only."""
    proc = start("node0", [PARCOMP, "run", "-n", 4, "--hosts", "node0:2,node1:2", "--timeout",
                           30, ROOT / "tests/cluster/scripts/hang.py", "--stuck", "3"],
                 cwd=shared)  # fmt: skip
    try:
        time.sleep(8)  # the job waits for rank 3 until its timeout
        assert proc.poll() is None
        for i, node in enumerate(["node0", "node1"]):
            text = on(node, ["ss", "-tlnpH"]).stdout
            mine = rig.address("pc", i)
            ranks = [line for line in text.splitlines() if line.split()[3].startswith(f"{mine}:")]
            assert len(ranks) >= 2, text  # each of its two ranks listens, on this address
            if node == "node0":
                assert "mpiexec" in text
            for line in text.splitlines():
                local = line.split()[3]
                users = re.findall(r'\("([^"]+)"', line)
                if local.startswith(f"{mine}:"):
                    assert set(users) == {"python"}, line  # a rank's UCX listener
                else:  # anything else: Hydra's control port, inherited by its children
                    assert node == "node0" and "mpiexec" in users, line
            assert on(node, ["ss", "-ulnpH"]).stdout.strip() == ""
    finally:
        proc.kill()
        proc.wait()


def heat(shared, *extra):
    return [PARCOMP, "run", "-n", 3, "--hosts", "node0,node1,node2", "--timeout", 60,
            ROOT / "jobs/heat2d.py", "--n", "64", "--steps", "20", "--checkpoint-dir",
            shared / "ck", "--checkpoint-every", "10", "--out", shared / "out", "--no-png",
            *extra]  # fmt: skip


def test_a_world_writable_node_local_folder_on_one_node_is_refused(cluster, shared):
    """The check runs on every node: only node2's /dev/shm/sec is writable by others."""
    for node in NODES:
        on(node, ["rm", "-rf", "/dev/shm/sec"])
    on("node2", ["sh", "-c", "mkdir -m 777 /dev/shm/sec && chmod 777 /dev/shm/sec"])
    proc = on("node0", heat(shared, "--local-dir", "/dev/shm/sec"), cwd=shared)
    assert proc.returncode != 0
    assert "/dev/shm/sec is writable by others (mode 0777)" in proc.stderr, proc.stderr[-3000:]
    assert "sha256" not in proc.stdout
    assert not list((shared / "ck").glob("step-*"))  # no checkpoint taken
    for node in ("node0", "node1"):  # the others made nothing that holds a checkpoint
        listing = on(node, ["sh", "-c", "find /dev/shm/sec -name 'shard-*' 2>/dev/null"])
        assert listing.stdout.strip() == "", (node, listing.stdout)


def test_a_shared_folder_of_another_owner_is_refused_from_every_node(cluster, shared):
    (shared / "ck").mkdir(mode=0o700)
    os.chown(shared / "ck", 4242, 4242)
    for first in ("node0", "node2"):  # rank 0 on another node: the same refusal
        hosts = "node0,node1,node2" if first == "node0" else "node2,node0,node1"
        argv = heat(shared)
        argv[argv.index("--hosts") + 1] = hosts
        proc = on(first, argv, cwd=shared)
        assert proc.returncode != 0
        assert f"checkpoint directory {shared / 'ck'} belongs to uid 4242" in proc.stderr, (
            proc.stderr[-3000:]
        )
        assert list((shared / "ck").iterdir()) == []  # nothing written into it
