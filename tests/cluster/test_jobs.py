"""The scientific jobs across real nodes: the 1-rank answer (SHA-256 of the result, or the
job's own verification) with ranks on 2-4 nodes, messages over the rate-limited links.

The reference runs on one rank on the host; the cluster runs start on node0 (the
allocation's first node) with ``parcomp run --hosts``; every output goes to the shared
folder.  Each run also checks that bytes crossed the links of the nodes it used."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import PARCOMP, ROOT, found, parcomp_run

JOBS = {
    # job: (arguments, hosts, ranks, what must agree)
    "heat2d": ((), "node0,node1,node2,node3", 4, r"sha256 = (\w+)"),
    "poisson_cg": (("--n", "48"), "node0,node1,node2", 3, r"sha256 = (\w+)"),
    "grayscott": (("--n", "40"), "node0:2,node1:2", 4, r"sha256 = (\w+)"),
    "walkers": (("--walkers", "6000", "--steps", "60", "--n", "24"), "node0,node1", 2,
                r"sha256 = (\w+)"),
    "md": (("--cells", "5", "--steps", "120", "--grid", "6"), "node1,node2,node3", 3,
           r"sha256 = (\w+)"),
    "pi": (("--samples", "3000000", "--chunk", "100000"), "node0,node3", 2, r"(pi ~= \S+)"),
}  # fmt: skip


def link_bytes(cluster, nodes) -> dict[str, int]:
    out = {}
    for node in nodes:
        veth = cluster["nodes"][node]["veth"]
        text = subprocess.run(["ip", "-s", "-j", "link", "show", veth], capture_output=True,
                              text=True).stdout  # fmt: skip
        out[node] = json.loads(text)[0]["stats64"]["rx"]["bytes"]
    return out


def reference(script, args, tmp_path):
    proc = subprocess.run(
        [PARCOMP, "run", "-n", "1", "--timeout", "120", f"jobs/{script}.py", *args,
         *(() if script == "pi" else ("--out", tmp_path / "ref"))],
        capture_output=True, text=True, timeout=150, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.parametrize("script", sorted(JOBS))
def test_job_across_nodes_gives_the_one_rank_answer(cluster, shared, tmp_path, script):
    args, hosts, ranks, pattern = JOBS[script]
    want = found(pattern, reference(script, args, tmp_path))
    nodes = [h.split(":")[0] for h in hosts.split(",")]
    before = link_bytes(cluster, nodes)
    out = () if script == "pi" else ("--out", shared / "out")
    proc = parcomp_run(hosts, ranks, ROOT / "jobs" / f"{script}.py", *args, *out, cwd=shared)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert found(pattern, proc.stdout) == want
    after = link_bytes(cluster, nodes)
    assert all(after[n] > before[n] for n in nodes), (before, after)


@pytest.mark.parametrize("hosts,ranks", [("node0:2,node1:2", 4), ("node2,node3", 2)])
def test_poisson_fft_across_nodes_meets_the_exact_solution(cluster, shared, hosts, ranks):
    proc = parcomp_run(hosts, ranks, ROOT / "jobs/poisson_fft.py", "--n", "32", "--out",
                       shared / "out", cwd=shared)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert float(found(r"max \|u - exact\| = (\S+)", proc.stdout)) < 1e-12
    assert f"on {ranks} ranks" in proc.stdout


def test_wordcount_across_nodes_counts_as_one_rank(cluster, shared, tmp_path):
    sys.path.insert(0, str(ROOT / "jobs"))
    import wordcount

    files = wordcount.generate_corpus(shared, 5, 3000, seed=9)
    one = subprocess.run(
        [PARCOMP, "run", "-n", "1", "--timeout", "60", "jobs/wordcount.py", *files, "--top",
         "8"], capture_output=True, text=True, timeout=90, cwd=ROOT,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr[-2000:]
    proc = parcomp_run("node1,node2,node3", 3, ROOT / "jobs/wordcount.py", *files, "--top", "8",
                       cwd=shared)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = [line for line in proc.stdout.splitlines() if line.startswith("  ")]
    assert counts and counts == [line for line in one.stdout.splitlines() if line.startswith("  ")]
    assert "words," in proc.stdout
