"""Command-line interface: ``parcomp info``, ``parcomp run``; also ``python -m parcomp``.

Local (``info`` starts MPI as a singleton to ask the library its version; ``run`` starts
``mpiexec``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# The rest of parcomp is imported in the commands that use it: `parcomp run` installs its
# signal handlers (main) before those modules load, so a preemption during start-up is
# kept, not lost.
from parcomp.runtime.errors import ConfigError, ParcompError

__all__ = ["main"]


def _int_at_least(minimum: int, label: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {label}, got {text!r}")
        return value

    return parse


_positive_int = _int_at_least(1, "a positive integer")
_nonnegative_int = _int_at_least(0, "an integer >= 0")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _version(module: str) -> str:
    try:
        return str(importlib.import_module(module).__version__)
    except Exception as exc:  # noqa: BLE001 - report, don't fail
        return f"not available ({type(exc).__name__}: {exc})"


def info_lines() -> tuple[list[str], list[str]]:
    """Lines of ``parcomp info`` and warnings about the setup."""
    from parcomp._version import __version__
    from parcomp.launch.mpiexec import (
        find_mpiexec,
        loaded_mpi_identity,
        mpiexec_identity,
        mpiexec_mismatch,
    )
    from parcomp.runtime.kernel_cache import cache_dir

    lines = [
        f"python:        {platform.python_version()} ({sys.executable})",
        f"parcomp:       {__version__}",
        f"numpy:         {_version('numpy')}",
        f"mpi4py:        {_version('mpi4py')}",
        f"numba:         {_version('numba')}",
        f"h5py:          {_version('h5py')}",
    ]
    warnings = []
    library = loaded_mpi_identity()
    from mpi4py import MPI

    first = MPI.Get_library_version().strip().splitlines()[0]
    lines.append(f"MPI library:   {library.describe()}  [{first.strip()}]")
    lines.append(f"MPI standard:  {'.'.join(map(str, MPI.Get_version()))}")
    try:
        import h5py

        lines.append(
            f"parallel HDF5: {'yes (h5py built with MPI)' if h5py.get_config().mpi else 'no (serial h5py)'}"
        )
    except Exception as exc:  # noqa: BLE001
        lines.append(f"parallel HDF5: unknown ({exc})")
    lines.append(f"numba cache:   {cache_dir()}")
    lines.append(f"ULFM:          {_ulfm_line(library.vendor)}")
    from parcomp.launch.listen import listeners

    lines += listeners(library.vendor)
    try:
        launcher = find_mpiexec()
        ident = mpiexec_identity(launcher)
        lines.append(f"mpiexec:       {launcher}  [{ident.describe()}]")
        warnings += mpiexec_mismatch(ident, library)
    except ParcompError as exc:
        lines.append("mpiexec:       none found")
        warnings.append(str(exc))
    return lines, warnings


def _ulfm_line(vendor: str | None) -> str:
    """Whether in-job recovery can work with this MPI (it is switched on by --ulfm)."""
    from mpi4py import MPI

    if vendor == "Open MPI" and hasattr(MPI.Comm, "Shrink"):
        return "available with `parcomp run --ulfm` (Open MPI, mpirun --with-ft ulfm)"
    return f"not with {vendor or 'this MPI'}: a lost rank ends the job; use --restarts"


def _cmd_info(_args: argparse.Namespace) -> int:
    # An Open MPI singleton (a process not started by mpirun, as this one) leaves its
    # 16 MiB /dev/shm/sm_segment.* behind at exit (Open MPI 5.0.11): info needs no
    # shared-memory transport, so it asks for none (MPICH ignores the variable)
    os.environ.setdefault("OMPI_MCA_btl", "self")
    lines, warnings = info_lines()
    print("\n".join(lines))
    for warning in warnings:
        print(f"WARNING: {warning}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from parcomp.launch.hosts import parse_hosts, read_hostfile
    from parcomp.launch.run import launch_job
    from parcomp.runtime.resilient import ulfm_requested

    if args.module is None and args.script is None:
        raise ParcompError("parcomp run needs a script (or -m MODULE) to run")
    env = None
    if args.emulate_nodes is not None:
        if args.emulate_nodes > args.n:
            raise ConfigError(
                f"--emulate-nodes {args.emulate_nodes}: more emulated nodes than ranks (-n {args.n})"
            )
        env = dict(os.environ, PARCOMP_EMULATE_NODE_COUNT=str(args.emulate_nodes))
    hosts = None
    if args.hosts is not None and args.hostfile is not None:
        raise ConfigError("give --hosts or --hostfile, not both")
    if args.hosts is not None:
        hosts = parse_hosts(args.hosts)
    elif args.hostfile is not None:
        hosts = read_hostfile(args.hostfile)
    if hosts and args.emulate_nodes is not None:
        raise ConfigError(
            "--emulate-nodes pretends to be several nodes; with a host list the nodes are real"
        )
    if args.module is not None:
        target, rest = args.module, args.args
    else:
        target, rest = args.script, args.args
    return launch_job(
        signals=getattr(args, "signals", None),
        n=args.n,
        target=target,
        args=rest,
        module=args.module is not None,
        timeout=args.timeout,
        restarts=args.restarts,
        shrink=args.shrink,
        ulfm=args.ulfm or ulfm_requested(),
        hang_after=args.hang_after,
        env=env,
        hosts=hosts,
        shared_dir=args.shared_dir,
    )


def _cmd_slurm(args: argparse.Namespace) -> int:
    from pathlib import Path

    from parcomp.launch.slurm import SlurmOptions, lead_warning, render_sbatch

    if args.script is None:
        raise ParcompError("parcomp slurm needs the job script to run")
    opts = SlurmOptions(
        script=args.script,
        args=tuple(args.args),
        name=args.name or Path(args.script).stem,
        ntasks=args.ntasks,
        nodes=args.nodes,
        time=args.time,
        signal_lead=args.signal_lead,
        restarts=args.restarts,
        output=args.log,
        numba_cache=args.numba_cache,
    )
    text = render_sbatch(opts)
    warning = lead_warning(opts)
    if warning:
        print(f"parcomp slurm: warning: {warning}", file=sys.stderr)
    if args.output:
        Path(args.output).write_text(text)
        print(f"wrote {args.output}; submit it with: sbatch {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from pathlib import Path

    from parcomp.checkpoint.inspect import inspect_checkpoint
    from parcomp.checkpoint.reader import list_checkpoints

    directory = Path(args.directory)
    if not directory.is_dir():
        raise ParcompError(f"{directory} is not a directory")
    if any(p.name.startswith("node-") and p.is_dir() for p in directory.iterdir()):
        return _inspect_local(directory, args.quick)
    found = list_checkpoints(directory)
    if not found:
        print(f"{directory}: no checkpoints")
        return 1
    newest_valid = None
    for step, path in found:
        valid, text = inspect_checkpoint(path, verify_data=not args.quick)
        print(f"{path.name}  {'valid  ' if valid else 'INVALID'}  {text}")
        if valid and newest_valid is None:
            newest_valid = step
    stale = sorted(p.name for p in directory.iterdir() if p.name.startswith(".tmp-"))
    for name in stale:
        print(f"{name}  (unfinished write, ignored)")
    print(
        f"restore would use: {f'step {newest_valid}' if newest_valid is not None else 'nothing (no valid checkpoint)'}"
    )
    return 0 if newest_valid is not None else 1


def _inspect_local(root: Any, quick: bool) -> int:
    from parcomp.checkpoint.inspect import inspect_local

    nodes = sorted(p.name for p in root.iterdir() if p.name.startswith("node-"))
    print(f"node-local tier {root}: {len(nodes)} node folder(s) visible: {', '.join(nodes)}")
    found = inspect_local(root, verify_data=not quick)
    if not found:
        print("no node-local checkpoints")
        return 1
    for step, ok, text in found:
        print(f"step-{step:08d}  {'restorable' if ok else 'NOT RESTORABLE'}  {text}")
    best = next((step for step, ok, _ in found if ok), None)
    print(
        f"the node-local tier can supply step {best} (a restore takes it unless the shared "
        "directory holds a newer valid step)"
        if best is not None
        else "no restorable node-local step: a restore uses the shared directory"
    )
    return 0 if best is not None else 1


def build_parser() -> argparse.ArgumentParser:
    """The ``parcomp`` argument parser."""
    from parcomp._version import __version__

    parser = argparse.ArgumentParser(
        prog="parcomp",
        description="parcomp: run Numba kernels across MPI ranks, with checkpoint/restart.",
    )
    parser.add_argument("--version", action="version", version=f"parcomp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    info = sub.add_parser("info", help="show versions, the MPI library and which mpiexec is used")
    info.set_defaults(func=_cmd_info)

    run = sub.add_parser(
        "run",
        help="run a script on N MPI ranks (fail-fast: an error on any rank ends the job)",
        description="Run SCRIPT on N ranks with the mpiexec that belongs to mpi4py's MPI. "
        "An unhandled exception on any rank ends the whole job with that rank's traceback.",
    )
    run.add_argument("-n", "--np", dest="n", type=_positive_int, default=1, help="number of ranks")
    run.add_argument(
        "--timeout",
        type=_positive_float,
        default=None,
        help="seconds after which the whole job is killed (exit status 124); every rank's "
        "stack is printed first",
    )
    run.add_argument(
        "--hang-after",
        type=_positive_float,
        default=None,
        metavar="S",
        help="end the job (status 124) when no rank has entered or left a parcomp collective "
        "call for S seconds, printing every rank's stack first. `kill -QUIT` on parcomp run "
        "prints the stacks at any time without stopping the job",
    )
    run.add_argument(
        "--restarts",
        type=_nonnegative_int,
        default=0,
        metavar="K",
        help="relaunch up to K times after a failure; the job resumes from its last checkpoint",
    )
    run.add_argument("--shrink", action="store_true", help="relaunch on one rank fewer each time")
    run.add_argument(
        "--emulate-nodes",
        type=_positive_int,
        default=None,
        metavar="M",
        help="pretend the ranks run on M nodes (node-local checkpoint tier, partner copies, "
        "kernel caches), as evenly as they go; for tests and demos on one machine",
    )
    run.add_argument(
        "--hosts",
        default=None,
        metavar="H[:N],...",
        help="run on these machines, N ranks each (default 1): a multi-node job. Checked "
        "before anything runs; a relaunch (--restarts) uses the hosts still reachable",
    )
    run.add_argument(
        "--hostfile",
        default=None,
        metavar="FILE",
        help="like --hosts, one 'name[:N]' or 'name slots=N' per line",
    )
    run.add_argument(
        "--shared-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="a folder every host sees (the parallel file system), for the job's heartbeats "
        "and hang reports in a multi-node job (default: the working directory)",
    )
    run.add_argument(
        "--ulfm",
        action="store_true",
        help="in-job recovery: with Open MPI 5, start with --with-ft ulfm so that "
        "parcomp.run_resilient survives lost ranks without a relaunch (also PARCOMP_ULFM=1); "
        "other MPIs fall back to --restarts",
    )
    run.add_argument(
        "-m",
        dest="module",
        default=None,
        metavar="MODULE",
        help="run a module, like python -m MODULE",
    )
    run.add_argument("script", nargs="?", default=None, help="the Python script to run")
    run.add_argument("args", nargs="*", help="arguments for the script (or module)")
    run.set_defaults(func=_cmd_run)

    slurm = sub.add_parser(
        "slurm",
        help="render a Slurm batch script for a job (signal -> checkpoint -> requeue, restarts)",
        description="Print (or write with -o) an sbatch script that runs SCRIPT with "
        "`parcomp run -n $SLURM_NTASKS` (the MPI's own mpiexec, which starts its ranks on the "
        "allocated nodes through Slurm), forwards the pre-walltime USR1 so the job "
        "checkpoints, requeues it, and restarts it inside the allocation after a rank failure.",
    )
    slurm.add_argument("--ntasks", type=_positive_int, default=2, help="MPI ranks (default 2)")
    slurm.add_argument("--nodes", type=_positive_int, default=1, help="nodes (default 1)")
    slurm.add_argument(
        "--time", default="00:10:00", help="walltime, Slurm format (default 00:10:00)"
    )
    slurm.add_argument(
        "--signal-lead",
        type=_positive_int,
        default=60,
        help="seconds before the walltime when Slurm sends USR1 (default 60)",
    )
    slurm.add_argument(
        "--restarts",
        type=_nonnegative_int,
        default=2,
        help="restarts inside the allocation after a failure (default 2)",
    )
    slurm.add_argument("--name", default=None, help="job name (default: the script's name)")
    slurm.add_argument(
        "--numba-cache",
        default=None,
        metavar="DIR",
        help="a persistent compiled-kernel cache shared by jobs (exports PARCOMP_CACHE_DIR; "
        "default: each node's local cache, filled once per job over MPI)",
    )
    slurm.add_argument("--log", default="%x-%j.out", help="Slurm output file pattern")
    slurm.add_argument(
        "-o", "--output", default=None, help="write the script here instead of stdout"
    )
    slurm.add_argument("script", nargs="?", default=None, help="the job script")
    slurm.add_argument("args", nargs="*", help="arguments for the job script")
    slurm.set_defaults(func=_cmd_slurm)

    inspect = sub.add_parser(
        "inspect",
        help="list the checkpoints in a directory (or a node-local tier) and check each",
    )
    inspect.add_argument("directory")
    inspect.add_argument(
        "--quick", action="store_true", help="check manifests and sizes only, not the data CRCs"
    )
    inspect.set_defaults(func=_cmd_inspect)
    return parser


_VALUE_OPTIONS = {
    "run": (
        "-n",
        "--np",
        "--timeout",
        "--hang-after",
        "--restarts",
        "--emulate-nodes",
        "--hosts",
        "--hostfile",
        "--shared-dir",
    ),
    "slurm": (
        "--ntasks",
        "--nodes",
        "--time",
        "--signal-lead",
        "--restarts",
        "--name",
        "--log",
        "--numba-cache",
        "-o",
        "--output",
    ),
}


def _split_run(argv: list[str], with_value: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """Split ``run`` arguments into parcomp's own and the program's (after SCRIPT or -m MOD).

    argparse cannot stop at the script on its own: ``parcomp run -m pytest -q -x`` must hand
    ``-q -x`` to pytest.
    """
    own: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        if token == "--":
            return own, argv[i + 1 :]
        if token == "-m" and "-m" not in with_value:
            return own + argv[i : i + 2], argv[i + 2 :]
        if token in with_value:
            own += argv[i : i + 2]
            i += 2
            continue
        if token.startswith("-"):
            own.append(token)
            i += 1
            continue
        return own + [token], argv[i + 1 :]
    return own, []


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``parcomp`` console script."""
    tokens = list(sys.argv[1:] if argv is None else argv)
    signals = None
    if tokens[:1] == ["run"]:
        # Before anything else: a preemption signal during start-up is kept, not lost.
        from parcomp.launch.supervise import Signals

        signals = Signals()
        signals.install()
    parser = build_parser()
    program_args: list[str] = []
    if tokens and tokens[0] in _VALUE_OPTIONS:
        own, program_args = _split_run(tokens[1:], _VALUE_OPTIONS[tokens[0]])
        tokens = [tokens[0], *own]
    args = parser.parse_args(tokens)
    args.signals = signals
    if args.command in _VALUE_OPTIONS:
        args.args = program_args
    try:
        return int(args.func(args))
    except ParcompError as exc:
        print(f"parcomp {args.command}: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if signals is not None:  # the job is over: a late preemption signal must not
            import signal  # kill parcomp run while the interpreter shuts down

            for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2):
                signal.signal(sig, signal.SIG_IGN)
