"""Losing a node for real, many times: ``parcomp run --restarts`` and ``--ulfm`` on the rig.

Run (root):  .venv/bin/python bench/cluster_campaign.py [--trials 50] [--variants ...]

Builds its own 4-node cluster (``tests/cluster/cluster.py``, name ``cc``, 2 Gbit/s links)
and runs heat2d on 4 ranks, one per node, with node-local checkpoints (partner copies on
the next node) every 30 steps and a flush to the shared folder every 4th.  In each trial
one of node1..node3 (node0 holds ``parcomp run``, the batch host) is lost at a moment
drawn at random:

* ``any``: a uniformly random time after the job's first node-local checkpoint;
* ``checkpoint`` / ``partner`` / ``flush``: as soon as the rank on that node logs that it
  begins writing its node-local checkpoint / exchanging its partner copies / flushing,
  for a checkpoint step drawn at random (the log line reaches this script within
  milliseconds, so the loss lands in the phase or just after it).

Variants:

* ``restarts``: MPICH, ``--restarts 2``; the node is lost (every process killed, its
  ``/tmp`` and ``/dev/shm`` gone); relaunch on the 3 survivors from the partner copies;
* ``ulfm-node``: Open MPI 5 with ``--ulfm --restarts 2``, the node lost: Open MPI 5.0's
  runtime cannot survive a lost daemon, so this measures the relaunch fallback;
* ``ulfm-rank``: Open MPI 5 with ``--ulfm``, no restarts: the rank process on the node is
  SIGKILLed and the node's ``/dev/shm`` checkpoint folder deleted (the node's daemon
  lives): recovered in-job by the survivors from the partner copy.

A trial passes when the job gives the uninterrupted (1-rank) SHA-256; it fails clearly
when it ends non-zero naming the problem ("parcomp run: ...") with no answer printed; a
wrong answer, a hang (no end within 170 s) or a process left on a surviving node is a
failure of the campaign.  A trial whose job ended before the loss measured nothing: it
is reported and not counted, and another trial is run.  Exit status 1 unless every
variant reaches 98 % and has no wrong answer, hang or orphan.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tests" / "cluster"))
import cluster as rig  # noqa: E402
from _common import machine  # noqa: E402

NAME = "cc"
NODES = ["node0", "node1", "node2", "node3"]
HOSTS = ",".join(NODES)
STEPS, EVERY, FLUSH = 600, 30, 4
ARGS = ["--n", "1024", "--steps", str(STEPS), "--step-delay", "0.004"]
MOMENTS = ("any", "checkpoint", "partner", "flush")
PHASE = {
    "checkpoint": "writing the node-local checkpoint of step {step}$",
    "partner": "exchanging the partner copies of step {step}$",
    "flush": "flushing step {step} to ",
}
SHA = re.compile(r"sha256 = ([0-9a-f]{64})")


def cluster_exec(node: str, argv: list, **kw) -> list[str]:
    return [sys.executable, str(ROOT / "tests/cluster/cluster.py"), "--name", NAME, "exec",
            node, *map(str, argv)]  # fmt: skip


def on(node: str, argv: list, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(cluster_exec(node, argv), capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)  # fmt: skip


def leftovers(nodes: list[str], within: float = 15.0) -> dict[str, list[str]]:
    """Processes other than the node's first one left on ``nodes`` after ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        left = {}
        for node in nodes:
            lines = on(node, ["ps", "-eo", "pid=,args="]).stdout.splitlines()
            procs = [ln.strip() for ln in lines if not ln.strip().startswith("1 ")
                     and "ps -eo" not in ln and "nsenter" not in ln]  # fmt: skip
            if procs:
                left[node] = procs
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def reference() -> str:
    out = subprocess.run(
        [Path(sys.executable).with_name("parcomp"), "run", "-n", "1", "--timeout", "300",
         ROOT / "jobs/heat2d.py", *ARGS, "--no-png", "--out", "/tmp/parcomp-campaign-ref"],
        capture_output=True, text=True, timeout=400, cwd=ROOT,
    )  # fmt: skip
    found = SHA.search(out.stdout)
    if out.returncode != 0 or not found:
        sys.exit(f"the reference run failed:\n{out.stderr[-3000:]}")
    return found.group(1)


def trial(variant: str, moment: str, rnd: random.Random, folder: Path, ref: str,
          span: float = 0.0) -> dict:  # fmt: skip
    """One job and one loss (none when ``moment`` is "none": the calibration run; ``span``:
    its seconds from the first node-local checkpoint to the end)."""
    victim = rnd.choice(NODES[1:])
    rank = NODES.index(victim)
    venv = ROOT / (".venv" if variant == "restarts" else ".venv-ompi")
    mode = {"restarts": ["--restarts", "2"], "ulfm-node": ["--ulfm", "--restarts", "2"],
            "ulfm-rank": ["--ulfm"]}[variant]  # fmt: skip
    folder.mkdir(parents=True)
    argv = ["env", "PARCOMP_LOG_LEVEL_OTHERS=DEBUG", "PARCOMP_LOG_LEVEL=DEBUG",
            venv / "bin/parcomp", "run", "-n", "4", "--hosts", HOSTS, *mode, "--timeout", "150",
            ROOT / "jobs/heat2d.py", *ARGS, "--local-dir", "/dev/shm/job",
            "--checkpoint-dir", folder / "ckpt", "--checkpoint-every", EVERY,
            "--flush-every", FLUSH, "--out", folder / "out", "--no-png"]  # fmt: skip
    proc = subprocess.Popen(cluster_exec("node0", argv), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=folder,
                            stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    lines: list[str] = []
    arrived = threading.Event()
    target = None
    if moment not in ("any", "none"):
        steps = [s for s in range(EVERY, STEPS, EVERY)
                 if moment != "flush" or (s // EVERY) % FLUSH == 0]  # fmt: skip
        step = rnd.choice(steps)
        target = re.compile(rf"\[rank {rank}/4\] DEBUG parcomp\.checkpoint: "
                            + PHASE[moment].format(step=step))  # fmt: skip
    start_pattern = re.compile(r"node-local checkpoints in /dev/shm/job")

    def read() -> None:
        for line in proc.stderr:
            lines.append(line)
            if (target or start_pattern).search(line):
                arrived.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    t0 = time.monotonic()
    record = {"variant": variant, "moment": moment, "node": victim}
    if not arrived.wait(90) or proc.poll() is not None:
        record["when"] = "the moment never came"
    elif moment == "none":
        record["armed"] = time.monotonic() - t0
    else:
        if moment == "any":
            time.sleep(rnd.uniform(0.0, 0.9 * span))
        else:
            time.sleep(rnd.uniform(0.0, 0.005))
        record["when"] = f"{time.monotonic() - t0:.2f} s"
        record["job_alive_at_loss"] = proc.poll() is None
        if variant == "ulfm-rank":
            on(victim, ["sh", "-c", "pkill -KILL -f 'jobs/heat2d[.]py'; rm -rf /dev/shm/job"])
        else:
            rig.kill_node(victim, NAME)
    chunks: list[str] = []
    stdout = threading.Thread(target=lambda: chunks.append(proc.stdout.read()), daemon=True)
    stdout.start()  # (communicate() would read stderr too, racing the reader above)
    try:
        status = proc.wait(timeout=170)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait()
        status = None
    stdout.join(10)
    reader.join(10)
    out = "".join(chunks)
    err = "".join(lines)
    logs = Path(os.environ.get("PARCOMP_CAMPAIGN_LOGS", "/tmp/parcomp-campaign"))
    logs.mkdir(parents=True, exist_ok=True)
    (logs / f"{folder.name}.log").write_text(out + "\n" + err)
    record["seconds"] = round(time.monotonic() - t0, 1)
    record["status"] = status
    sha = SHA.search(out)
    if status is None:
        record["outcome"] = "hang"
    elif sha and sha.group(1) != ref:
        record["outcome"] = "wrong answer"
    elif status == 0 and sha:
        record["outcome"] = "right answer"
    elif status != 0 and not sha and "parcomp run:" in err:
        record["outcome"] = "clear error"
        record["message"] = next(ln for ln in err.splitlines() if "parcomp run:" in ln)[:300]
    else:
        record["outcome"] = "unclear"
        record["tail"] = err[-1500:]
    record["log"] = [
        ln
        for ln in err.splitlines()
        if re.search(
            r"recover|relaunch|partner copy|restored|resumed|fell back|lost|unreachable", ln
        )
    ][-12:]
    record["path"] = (
        "shared tier" if "fell back to the shared tier" in err
        else "in-job (ULFM)" if "recovered in-job" in err
        else "relaunch, partner copy" if "from the partner copy" in err
        else "relaunch, from the start" if "relaunching on" in err and "resumed at" not in err
        else "relaunch" if "relaunching on" in err
        else "none"
    )  # fmt: skip
    if not record.get("job_alive_at_loss", False):
        record["measured"] = False
    else:
        record["measured"] = record["path"] != "none" or record["outcome"] != "right answer"
    if moment == "none":
        record["span"] = time.monotonic() - t0 - record.get("armed", 0.0)
        record["orphans"] = leftovers(NODES)
        return record
    survivors = [n for n in NODES if n != victim] if variant != "ulfm-rank" else NODES
    record["orphans"] = leftovers(survivors)
    if variant != "ulfm-rank":
        rig.revive(victim, NAME)
    return record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50, help="measured trials per variant")
    parser.add_argument("--variants", nargs="+", default=["restarts", "ulfm-node", "ulfm-rank"])
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="write every trial here")
    args = parser.parse_args()
    why = rig.can_run()
    if why:
        sys.exit(f"cluster_campaign: {why}")
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rnd = random.Random(seed)
    print(f"# node-loss campaign, seed {seed}; {machine()}", flush=True)
    ref = reference()
    rig.down(NAME)
    state = rig.up(4, name=NAME)
    shared = Path(state["shared"])
    results: list[dict] = []
    failed = False
    try:
        for variant in args.variants:
            done, attempts = [], 0
            calib = trial(variant, "none", rnd, shared / f"{variant}-calibration", ref)
            if calib["outcome"] != "right answer" or calib["orphans"]:
                print(f"{variant}: the run without a loss failed: {calib}", flush=True)
                failed = True
                continue
            span = calib["span"]
            print(
                f"{variant}: without a loss {calib['seconds']} s, {span:.1f} s of them after "
                "the first node-local checkpoint",
                flush=True,
            )
            while len(done) < args.trials and attempts < 3 * args.trials:
                moment = MOMENTS[attempts % len(MOMENTS)]
                rec = trial(variant, moment, rnd, shared / f"{variant}-{attempts}", ref, span)
                attempts += 1
                results.append(rec)
                mark = rec["outcome"] + ("" if rec["measured"] else " (not measured)")
                print(f"{variant:9s} {attempts:3d} {rec['moment']:10s} {rec['node']} "
                      f"at {rec.get('when')}: {mark}, {rec['path']}, {rec['seconds']} s"
                      + (f" ORPHANS {rec['orphans']}" if rec["orphans"] else "")
                      + (f"\n    {rec.get('message') or rec.get('tail', '')}"
                         if rec["outcome"] != "right answer" else ""), flush=True)  # fmt: skip
                if rec["measured"]:
                    done.append(rec)
            failed |= report(variant, done, attempts)
    finally:
        rig.down(NAME)
    if args.json:
        args.json.write_text(json.dumps({"seed": seed, "trials": results}, indent=1))
    return 1 if failed else 0


def report(variant: str, done: list[dict], attempts: int) -> bool:
    """Print the variant's table; True when it failed the campaign's bar."""
    print(f"\n## {variant}: {len(done)} measured trials ({attempts - len(done)} not measured)")
    print("| moment | trials | right answer | clear error | wrong | hang | orphans | paths |")
    print("|---|---|---|---|---|---|---|---|")
    for moment in (*MOMENTS, "all"):
        rows = [r for r in done if moment in ("all", r["moment"])]
        count = {o: sum(r["outcome"] == o for r in rows)
                 for o in ("right answer", "clear error", "wrong answer", "hang", "unclear")}  # fmt: skip
        paths: dict[str, int] = {}
        for r in rows:
            paths[r["path"]] = paths.get(r["path"], 0) + 1
        print(f"| {moment} | {len(rows)} | {count['right answer']} | {count['clear error']} | "
              f"{count['wrong answer']} | {count['hang']} | {sum(bool(r['orphans']) for r in rows)}"
              f" | {', '.join(f'{k} {v}' for k, v in sorted(paths.items()))} |")  # fmt: skip
    right = sum(r["outcome"] == "right answer" for r in done)
    bad = [r for r in done if r["outcome"] in ("wrong answer", "hang", "unclear") or r["orphans"]]
    rate = right / len(done) if done else 0.0
    secs = sorted(r["seconds"] for r in done)
    median = secs[len(secs) // 2] if secs else float("nan")
    print(f"\n{variant}: {right}/{len(done)} = {100 * rate:.1f} % right answers (bar: 98 %); "
          f"{len(bad)} wrong/hang/unclear/orphan; median trial {median} s")  # fmt: skip
    if not done:
        print(f"{variant}: MEASURED NOTHING (every loss came after the job ended)")
    return not done or rate < 0.98 or bool(bad)


if __name__ == "__main__":
    sys.exit(main())
