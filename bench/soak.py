"""Soak test: many heat2d runs, each with a random rank SIGKILLed at a random step.

Run:  .venv/bin/python bench/soak.py [--trials 20] [--seed 1] [--node-local] [--ulfm]
                                    [--random-time]

Every trial must end with the SHA-256 of an uninterrupted run; prints one line per trial
and a summary (exit status 1 on any mismatch).

* default: shared-directory checkpoints, ``parcomp run --restarts 2`` relaunches;
* ``--node-local``: node-local checkpoints in /dev/shm on emulated nodes (1 or 2 ranks per
  node), and the victim's node folder is deleted as it dies (the node is lost);
* ``--ulfm``: in-job recovery with the Open MPI wheel (``make ompi-venv``), node-local
  checkpoints; the trial must finish inside the same ``mpirun`` (no relaunch), except
  with ``--random-time``, where ``--restarts 1`` relaunches a job whose rank died before
  MPI was initialised everywhere (ULFM covers only an initialised job).
* ``--random-time``: the victim is SIGKILLed from outside at a random wall-clock moment
  (anywhere: in a halo exchange, a checkpoint write, a partner copy, start-up), not at a
  step boundary.  A trial then passes if it ends with the uninterrupted checksum, or
  fails cleanly (non-zero, with a message, before the timeout); a checksum that differs
  with status 0 (a silent wrong answer) or a hang fails the soak.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import BIN, ROOT

HEAT = ["jobs/heat2d.py", "--n", "128", "--steps", "120", "--no-png"]


def run(
    argv: list[str], bin_dir: Path = BIN, env: dict | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(bin_dir / "parcomp"), "run", *map(str, argv)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def kill_at(
    argv: list[str], bin_dir: Path, env: dict, when: float, victim: int, marker: str
) -> subprocess.CompletedProcess:
    """Start the job, SIGKILL rank ``victim``'s process after ``when`` seconds of wall clock."""
    full = [str(bin_dir / "parcomp"), "run", *map(str, argv)]
    proc = subprocess.Popen(
        full,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )
    time.sleep(when)
    # the rank processes only: the launcher's (mpiexec, prterun) command line names the
    # runner too, and killing the launcher is another experiment
    ranks = subprocess.run(
        ["pgrep", "-f", rf"^\S*python\S* -m parcomp\.launch\.runner .*{marker}"],
        capture_output=True,
        text=True,
    ).stdout.split()
    pids = sorted(int(p) for p in ranks)  # started in rank order: a fair random victim
    if pids:
        try:
            os.kill(pids[victim % len(pids)], 9)
        except ProcessLookupError:
            pass
    try:
        out, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        return subprocess.CompletedProcess(full, 124, out, err)
    return subprocess.CompletedProcess(full, proc.returncode, out, err)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--node-local", action="store_true", help="node-local tier, node lost")
    parser.add_argument("--ulfm", action="store_true", help="in-job recovery (Open MPI wheel)")
    parser.add_argument("--random-time", action="store_true", help="kill at a random moment")
    parser.add_argument("--log-dir", help="keep the whole stderr of failed or relaunched trials")
    args = parser.parse_args()
    outcomes: collections.Counter[str] = collections.Counter()
    rnd = random.Random(args.seed)
    bin_dir = ROOT / ".venv-ompi" / "bin" if args.ulfm else BIN
    if not (bin_dir / "parcomp").exists():
        raise SystemExit(f"{bin_dir}/parcomp missing: run `make ompi-venv`")
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory(dir="/dev/shm") as shm:
        ref = run(["-n", "2", *HEAT, "--out", tmp])
        want = re.search(r"sha256 = (\w+)", ref.stdout).group(1)
        bad = 0
        for trial in range(args.trials):
            ranks = rnd.choice([2, 3, 4] if not args.ulfm else [3, 4])
            step, victim, every = rnd.randint(2, 118), rnd.randrange(ranks), rnd.choice([5, 7, 13])
            per_node = rnd.choice([1, 2]) if ranks > 2 else 1
            argv = ["-n", ranks, "--timeout", "240"]
            # ULFM recovers in-job; a rank lost before every rank initialised MPI (which
            # ULFM cannot cover) or an unrecoverable failure is relaunched once.
            argv += ["--ulfm", "--restarts", "1"] if args.ulfm else ["--restarts", "2"]
            argv += [*HEAT, "--out", tmp]
            argv += ["--checkpoint-dir", f"{tmp}/ck{trial}", "--checkpoint-every", every]
            if args.random_time:
                # ~3.6 s of steps: room for a random kill.  A kill during MPI start-up can
                # leave Open MPI's survivors in MPI_Init for good (ULFM covers only an
                # initialised job): the hang watchdog ends such a trial, and it is counted.
                argv = [*argv[:4], "--hang-after", "20", *argv[4:], "--step-delay", "0.03"]
            else:
                argv += ["--die-at-step", step, "--die-rank", victim]
            env = {}
            how = ""
            if args.node_local or args.ulfm:
                local = Path(shm) / f"local{trial}"
                argv += ["--local-dir", local, "--flush-every", rnd.choice([1, 3, 5])]
                env["PARCOMP_EMULATE_NODES"] = str(per_node)
                how = f", {per_node} rank(s)/node"
                if args.node_local:
                    node = f"node-{socket.gethostname()}-node{victim // per_node}"
                    argv += ["--die-wipe", local / node]
                    how += ", its node's storage lost"
            t = time.perf_counter()
            if args.random_time:
                when = rnd.uniform(0.3, 6.0)  # start-up (~2 s here), then ~3.6 s of steps
                proc = kill_at(argv, bin_dir, env, when, victim, f"{tmp}/ck{trial}")
                step = f"t+{when:.2f}s"
            else:
                proc = run(argv, bin_dir, env)
            got = re.search(r"sha256 = (\w+)", proc.stdout)
            in_job = "recovered in-job" in proc.stderr
            relaunched = "restart 1/" in proc.stderr
            recovered = (in_job and not relaunched) if args.ulfm else "restart 1/2" in proc.stderr
            if args.ulfm and args.random_time:
                recovered = in_job or relaunched
            ok = (
                proc.returncode == 0
                and got is not None
                and got.group(1) == want
                and (recovered or args.random_time)  # a late kill may find the job done
            )
            if args.random_time and not ok:
                wrong = proc.returncode == 0 and got is not None and got.group(1) != want
                watchdog = proc.returncode == 124 and "looks hung" in proc.stderr
                clean = proc.returncode not in (0, 124) and not wrong
                outcomes[
                    "clean failure"
                    if clean
                    else "hang ended by the watchdog, stacks printed"
                    if watchdog
                    else "WRONG ANSWER or undiagnosed hang"
                ] += 1
                if clean:
                    last = [ln for ln in proc.stderr.splitlines() if " INFO " not in ln]
                    print(f"    failed with status {proc.returncode}: {last[-3:]}", flush=True)
                if watchdog:
                    where = re.findall(r"--- (ranks? [^:]+): ([^\n]+)", proc.stderr)
                    print(f"    watchdog: {where[:3]}", flush=True)
                ok = clean or watchdog
            elif args.random_time:
                outcomes[
                    "same checksum, recovered in-job"
                    if in_job and not relaunched
                    else "same checksum, relaunched once"
                    if relaunched
                    else "same checksum, the kill did no harm (before start or after the work)"
                ] += 1
            if args.log_dir and (not ok or relaunched):
                Path(args.log_dir).mkdir(parents=True, exist_ok=True)
                Path(args.log_dir, f"trial-{trial:03d}.stderr").write_text(proc.stderr)
            bad += not ok
            print(
                f"trial {trial:3d}: {ranks} ranks{how}, rank {victim} killed at step {step}, "
                f"checkpoint every {every}: {'ok' if ok else 'MISMATCH'} ({time.perf_counter() - t:.1f} s)",
                flush=True,
            )
            if not ok:
                print(proc.stderr[-2000:], flush=True)
    if args.random_time:
        print("outcomes:", dict(outcomes))
    print(
        f"{args.trials - bad}/{args.trials} trials gave the uninterrupted result or failed cleanly"
        if args.random_time
        else f"{args.trials - bad}/{args.trials} trials gave the uninterrupted result"
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
