"""parcomp across a real (rate-limited) link: halos, overlap, deep halos, redistribute, FFT
and the keyed shuffle against hand-written mpi4py over the same link.

Run (root):  .venv/bin/python bench/cluster_link.py [--rate 2gbit] [--repeats 7] [--quick]

Builds a 2-node cluster (``tests/cluster/cluster.py``, name ``cb``: separate network,
mount and PID namespaces, a veth each on a bridge, ``tbf`` at ``--rate`` each way) and
runs ``bench/cluster_link_worker.py`` with ``parcomp run -n 2 --hosts node0,node1`` (one
rank per node: every message crosses the link, over TCP), then the same worker with both
ranks on node0 (shared memory), for comparison.  Within each job the cases are
interleaved and timed barrier to barrier (the slowest rank); medians of ``--repeats``.
The worker checks every parcomp result against its hand-written twin before timing.
Ratios are hand-written time / parcomp time (above 1: parcomp faster).  Fails if a job
fails or a case timed nothing.

``--async-progress``: the halo cases only, across the link, with MPICH's progress thread
(``MPIR_CVAR_ASYNC_PROGRESS=1``), which moves messages while the ranks compute.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tests" / "cluster"))
import cluster as rig  # noqa: E402
from _common import machine  # noqa: E402

NAME = "cb"
WORKER = HERE / "cluster_link_worker.py"
PARCOMP = Path(sys.executable).with_name("parcomp")


def job(hosts: str, extra: list[str], env: tuple[str, ...] = ()) -> dict:
    argv = [sys.executable, ROOT / "tests/cluster/cluster.py", "--name", NAME, "exec", "node0",
            "env", *env, PARCOMP, "run", "-n", "2", "--timeout", "1500", *(["--hosts", hosts] if hosts else []),
            WORKER, *extra]  # fmt: skip
    out = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=1600,
                         cwd=ROOT, stdin=subprocess.DEVNULL)  # fmt: skip
    if out.returncode != 0:
        sys.exit(f"cluster_link: the job on {hosts or 'node0'} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def ratio(times: dict[str, float], case: str) -> str:
    return f"{times['hand-written'] / times[case]:.2f}"


def table(label: str, res: dict) -> list[str]:
    lines = [f"### {label} (ranks on {', '.join(res['hosts'])})", ""]
    lines += ["| halo block per rank | message | hand-written mpi4py | overlap=False | "
              "overlap=True | steps=4 | steps=8 |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
    for h in res["halo"]:
        t = {k: v / h["steps"] * 1e3 for k, v in h["seconds"].items()}
        lines.append(
            f"| {h['rows']}x{h['cols']} | {h['message_bytes'] // 1024} KiB "
            f"| {t['hand-written']:.3f} ms | {t['overlap=False']:.3f} ms ({ratio(t, 'overlap=False')}x) "
            f"| {t['overlap=True']:.3f} ms ({ratio(t, 'overlap=True')}x) "
            f"| {t['steps=4']:.3f} ms ({ratio(t, 'steps=4')}x) "
            f"| {t['steps=8']:.3f} ms ({ratio(t, 'steps=8')}x) |"
        )  # fmt: skip
    lines.append("")
    if "redistribute" not in res:
        return lines
    lines.append("| transfer | per rank | hand-written mpi4py | parcomp | ratio |")
    lines.append("|---|---|---|---|---|")
    r, f, s = res["redistribute"], res["fft"], res["shuffle"]
    for name, case, size in (
        (f"redistribute {r['size']}^2 rows->columns", r, f"{r['bytes_per_rank'] / 2**20:.0f} MiB"),
        (f"fftn complex {f['n']}^3", f, f"{f['bytes_per_rank'] / 2**20:.0f} MiB"),
        (f"keyed count, {s['keys_per_rank']:,} keys of {s['key_space']:,}", s,
         f"{s['keys_per_rank'] * 8 / 2**20:.0f} MiB of keys"),
    ):  # fmt: skip
        t = case["seconds"]
        lines.append(f"| {name} | {size} | {t['hand-written'] * 1e3:.1f} ms "
                     f"| {t['parcomp'] * 1e3:.1f} ms | {ratio(t, 'parcomp')}x |")  # fmt: skip
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", default="2gbit")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--async-progress",
        action="store_true",
        help="halo cases only, with MPIR_CVAR_ASYNC_PROGRESS=1",
    )
    args = parser.parse_args()
    why = rig.can_run()
    if why:
        sys.exit(f"cluster_link: {why}")
    extra = ["--repeats", str(args.repeats), *(["--quick"] if args.quick else [])]
    rig.down(NAME)
    rig.up(2, rate=args.rate, name=NAME)
    try:
        if args.async_progress:
            across = job("node0,node1", [*extra, "--halo-only"], ("MPIR_CVAR_ASYNC_PROGRESS=1",))
            local = None
        else:
            across = job("node0,node1", extra)
            local = job("", extra)
    finally:
        rig.down(NAME)
    if local is None:
        print(f"# halos across a {args.rate} link with MPIR_CVAR_ASYNC_PROGRESS=1; {machine()}")
        print("\n".join(table(f"2 nodes, {args.rate} link, async progress", across)))
        return 0
    if sorted(across["hosts"]) != ["node0", "node1"] or set(local["hosts"]) != {"node0"}:
        sys.exit(f"cluster_link: ranks not where asked: {across['hosts']} / {local['hosts']}")
    for res in (across, local):
        for h in res["halo"]:
            if min(h["seconds"].values()) <= 0 or h["messages"] == 0:
                sys.exit("cluster_link: a halo case measured nothing")
    print(f"# parcomp across a {args.rate} link; {machine()}")
    print("\n".join(table(f"2 nodes, {args.rate} link", across)))
    print()
    print("\n".join(table("1 node, shared memory", local)))
    if args.json:
        args.json.write_text(json.dumps({"rate": args.rate, "across": across, "local": local}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
