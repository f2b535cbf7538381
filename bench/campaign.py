"""Correctness at 8-64 ranks, oversubscribed: every case gives the 1-rank answer.

Run:  .venv/bin/python bench/campaign.py [--ranks 8 16 32 64] [--quick]

On this 2-core machine 64 ranks are 32 per core: this shows that nothing hangs or
changes the answer at those counts (and how long a job takes to get through start-up),
not speed-up.  ``parcomp run`` makes MPICH's waiting ranks yield the CPU when there are
more ranks than cores.  For each rank count p:

* ``heat2d``: 512x512, 20 steps; the sha256 of the final field equals the 1-rank run's.
* ``map/reduce``: bench/campaign_job.py -- map_reduce (deterministic) and map under the
  block, cyclic and dynamic schedules, keyed word counts without and with a shuffle
  budget; every digest equals the 1-rank run's, and the word counts equal a serial
  ``collections.Counter``.
* ``checkpoint p -> 7 -> p/2+1``: heat2d to step 10 on p ranks with checkpoints, resumed
  on 7 ranks to step 15, then on p/2+1 ranks to step 20 (64 -> 7 -> 33); the final field
  equals the uninterrupted run's.
* ``node-local tier``: heat2d on p ranks emulating p/2 nodes (``--emulate-nodes``), with
  checkpoints in node-local folders and partner copies; a rank is SIGKILLed at step 12 and
  its node's folder deleted; ``--restarts 1`` resumes from the partner copies; the final
  field equals the uninterrupted run's.

Exit status 1 if any case differs or fails.  ``--quick`` (CI): 8 ranks only.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine

ROOT = Path(__file__).resolve().parent.parent
PARCOMP = Path(sys.executable).with_name("parcomp")
JOB = ROOT / "bench" / "campaign_job.py"
HEAT = ROOT / "jobs" / "heat2d.py"
SHA = re.compile(r"sha256 = ([0-9a-f]{64})")


def launch(n: int, argv: list[str], *, extra: tuple[str, ...] = (), timeout: float = 600) -> str:
    """``parcomp run -n N ... argv``; stdout+stderr (raises on a non-zero status)."""
    cmd = [str(PARCOMP), "run", "-n", str(n), "--timeout", str(timeout), *extra, *argv]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 60, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} -> {out.returncode}\n{out.stdout}\n{out.stderr}")
    return out.stdout + out.stderr


def heat(
    n: int, out: Path, steps: int, *more: str, extra: tuple[str, ...] = (), expect: str = ""
) -> str:
    """heat2d's sha256; ``expect``: a regular expression its output must contain (proof
    that a restart or a resume happened)."""
    text = launch(
        n,
        [str(HEAT), "--n", "512", "--steps", str(steps), "--no-png", "--out", str(out), *more],
        extra=extra,
    )
    found = SHA.findall(text)
    if not found:
        raise RuntimeError(f"no sha256 in the output of heat2d on {n} ranks:\n{text}")
    if expect and not re.search(expect, text):
        raise RuntimeError(f"heat2d on {n} ranks: {expect!r} not in its output:\n{text}")
    return found[-1]


def serial_words(items: int) -> str:
    import numpy as np

    counter: collections.Counter[str] = collections.Counter()
    for i in range(items // 20):
        rng = np.random.default_rng(i)
        counter.update(f"w{int(k)}" for k in rng.zipf(1.3, 200) % 5000)
    return hashlib.sha256(repr(sorted(counter.items())).encode()).hexdigest()[:16]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--quick", action="store_true", help="8 ranks only (CI)")
    parser.add_argument("--items", type=int, default=20000, help="map/reduce items")
    args = parser.parse_args()
    ranks = [8] if args.quick else args.ranks
    work = Path(tempfile.mkdtemp(prefix="parcomp-campaign-"))
    os.environ.setdefault("PARCOMP_NODE_CACHE_DIR", str(work / "cache"))
    host = socket.gethostname() or "localhost"
    failures: list[str] = []
    rows: list[tuple[str, int, float, str]] = []

    def case(name: str, p: int, fn, want: str | None = None) -> str | None:
        t0 = time.perf_counter()
        try:
            got = fn()
        except Exception as exc:  # noqa: BLE001 - reported and counted
            failures.append(f"{name} on {p} ranks: {exc}")
            rows.append((name, p, time.perf_counter() - t0, "FAILED"))
            return None
        ok = want is None or got == want
        rows.append((name, p, time.perf_counter() - t0, "same as 1 rank" if ok else "DIFFERS"))
        if not ok:
            failures.append(f"{name} on {p} ranks: {got} != {want}")
        print(f"{name:<28} {p:>3} ranks  {rows[-1][2]:7.1f} s  {rows[-1][3]}", flush=True)
        return got

    try:
        ref_heat = case("heat2d 512^2, 20 steps", 1, lambda: heat(1, work / "h1", 20))
        ref_job = case(
            "map/reduce", 1, lambda: launch(1, [str(JOB), str(args.items)]).splitlines()[-1]
        )
        words = serial_words(args.items)
        if ref_job is not None and json.loads(ref_job)["keyed words"] != words:
            failures.append("keyed word count on 1 rank differs from collections.Counter")
        for p in ranks:
            case("heat2d 512^2, 20 steps", p, lambda p=p: heat(p, work / f"h{p}", 20), ref_heat)
            case(
                "map/reduce",
                p,
                lambda p=p: launch(p, [str(JOB), str(args.items)]).splitlines()[-1],
                ref_job,
            )
            chain = (p, 7, p // 2 + 1)
            ck = work / f"ck{p}"

            def restarts(chain=chain, ck=ck, p=p) -> str:
                for n, steps, start in zip(chain, (10, 15, 20), (0, 10, 15), strict=True):
                    sha = heat(
                        n,
                        work / f"c{p}-{n}",
                        steps,
                        "--checkpoint-every",
                        "5",
                        "--checkpoint-dir",
                        str(ck),
                        expect=rf"resumed at step {start} on {n} ranks" if start else "",
                    )
                return sha

            case(f"checkpoint {p}->7->{p // 2 + 1}", p, restarts, ref_heat)
            nodes = max(2, p // 2)
            local = work / f"local{p}"
            victim = p - 1
            victim_node = victim * nodes // p

            def node_loss(p=p, nodes=nodes, local=local, victim=victim, vn=victim_node) -> str:
                return heat(
                    p,
                    work / f"n{p}",
                    20,
                    "--checkpoint-every",
                    "5",
                    "--checkpoint-dir",
                    str(work / f"flush{p}"),
                    "--local-dir",
                    str(local),
                    "--flush-every",
                    "100",
                    "--die-at-step",
                    "12",
                    "--die-rank",
                    str(victim),
                    "--die-wipe",
                    str(local / f"node-{host}-node{vn}"),
                    extra=("--emulate-nodes", str(nodes), "--restarts", "1"),
                    expect=r"restart 1/1(.|\n)*resumed at step 10 on",
                )

            case(f"node-local, {nodes} nodes, kill", p, node_loss, ref_heat)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nmachine: {machine()}")
    print("| case | ranks | wall s | result |\n|---|---:|---:|---|")
    for name, p, seconds, result in rows:
        print(f"| {name} | {p} | {seconds:.1f} | {result} |")
    if failures:
        print("\nFAILED:\n" + "\n".join(failures), file=sys.stderr)
        return 1
    print(f"\nall {len(rows)} cases agree with 1 rank")
    return 0


if __name__ == "__main__":
    sys.exit(main())
