"""2-D heat diffusion on a distributed grid, verified against the analytic solution.

Run:  parcomp run -n 2 jobs/heat2d.py [--n 512] [--steps 500] [--out out/heat2d]

The unit square is an ``n x n`` grid of cells with Dirichlet boundaries (zero ghost cells)
and starts as the lowest Fourier mode ``sin(pi x) sin(pi y)``.  The explicit 5-point scheme
keeps that shape and multiplies it by ``g = 1 - 8 alpha sin^2(pi / (2 (n + 1)))`` per step,
so after ``s`` steps the exact discrete answer is ``g**s`` times the start: the job prints
its error against that, writes the field to HDF5 (dataset ``/u``) and a PNG, and prints a
SHA-256 checksum of the field, which is the same on any number of ranks.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path

import numpy as np

import parcomp
from parcomp import DistArray, run_stencil
from parcomp.kernels import heat_step_2d
from parcomp.testing import inject_failure


def initial(n: int):
    """The starting field as a function of global indices (for DistArray.fromfunction)."""

    def f(i: np.ndarray, j: np.ndarray) -> np.ndarray:
        return np.sin(np.pi * (i + 1) / (n + 1)) * np.sin(np.pi * (j + 1) / (n + 1))

    return f


def exact(n: int, steps: int, alpha: float) -> np.ndarray:
    """The exact discrete solution after ``steps`` steps (the whole grid: small n only)."""
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    return exact_at(n, steps, alpha)(i, j)


def exact_at(n: int, steps: int, alpha: float):
    """The exact discrete solution after ``steps`` steps, as a function of global indices."""
    g = 1.0 - 8.0 * alpha * np.sin(np.pi / (2 * (n + 1))) ** 2
    start = initial(n)
    return lambda i, j: g**steps * start(i, j)


#: The halo exchange is timed on its own every HALO_SAMPLE steps (timing every step costs
#: about a microsecond, a visible share of a small grid's step); the share reported is
#: the sampled mean times the steps.
HALO_SAMPLE = 64


def simulate(
    n: int,
    steps: int,
    alpha: float,
    comm=None,
    dims=None,
    progress: bool = False,
    checkpointer=None,
    die_at_step: int | None = None,
    die_rank: int | None = None,
    step_delay: float = 0.0,
    die_wipe: tuple[str, ...] = (),
    more_faults: tuple[tuple[int, int], ...] = (),
    series_every: int | None = None,
    series_path: Path | None = None,
):
    """Run the scheme; return ``(field, seconds_in_steps, seconds_in_halo_exchange, steps_run)``.

    The halo seconds are estimated from the exchanges timed every :data:`HALO_SAMPLE` steps.

    With a ``checkpointer`` the run resumes from its newest valid checkpoint (on any rank
    count) and checkpoints by its policy and on preemption signals.

    Notes
    -----
    Collective over `comm`: call on all ranks.
    """
    log = parcomp.get_logger("parcomp.jobs.heat2d")
    start = 0
    restored = (
        checkpointer.restore(require={"alpha": alpha, "n": n}) if checkpointer is not None else None
    )
    if restored is not None:
        u, start = restored.arrays["u"], restored.step
        if start > steps:  # the same on every rank: the restored manifest is agreed
            raise parcomp.ConfigError(
                f"the checkpoint is at step {start}, beyond --steps {steps}: ask for at "
                "least that many steps, or start afresh in another --checkpoint-dir"
            )
        log.info(
            "resumed at step %d on %d ranks (resumed_at=%.6f)", start, u.partition.size, time.time()
        )
    else:
        u = DistArray.fromfunction(initial(n), (n, n), halo=1, dims=dims, comm=comm)
    if u.global_shape != (n, n):
        raise parcomp.ConfigError(
            f"the checkpoint holds a {u.global_shape} grid, this run asks for ({n}, {n})"
        )
    v = u.zeros_like()
    series = None
    if series_every:
        from parcomp import Series, raise_if_any

        made = None
        if u.rank == 0:
            try:
                Path(series_path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                made = parcomp.ConfigError(f"cannot create {Path(series_path).parent}: {exc}")
        raise_if_any(made, u.comm)

        # A restart continues the series of the run it restores (records after the
        # restored step are dropped: they are computed again); a fresh start replaces it.
        series = Series(
            series_path,
            {"u": u},
            every=series_every,
            long_names={"u": "temperature", "time": "time in units of dt", "total": "sum of u"},
            units={"u": "1", "time": "1"},
            scalars=("total",),
            title=f"heat2d {n}x{n}, alpha {alpha}",
            resume_at=start if restored is not None else None,
            overwrite=restored is None,
            # synchronous: each record is committed before the next step (an asynchronous
            # record still in flight at a failure could be lost with the ones before it)
        )
        if series.missing(start):  # the start, or a restored step whose record was lost
            series.append(start, float(start), fields={"u": u}, scalars={"total": u.sum()})
    report = max(1, steps // 10)
    halo_time = 0.0
    comm = u.comm
    heat_step_2d(u.local, v.local, alpha)  # compile (or load from cache) outside the timing
    for arr in (u, v):  # build the persistent halo requests outside the timing, too
        arr.exchange_halos()
    comm.Barrier()
    t0 = time.perf_counter()
    sampled = 0
    faults = die_at_step is not None or bool(more_faults)
    for step in range(start + 1, steps + 1):
        if (step - start - 1) % HALO_SAMPLE == 0:  # time the exchange alone, every 64th step
            t = time.perf_counter()
            u.exchange_halos()
            halo_time += time.perf_counter() - t
            sampled += 1
            run_stencil(heat_step_2d, u, v, alpha, exchange=False)
        else:
            run_stencil(heat_step_2d, u, v, alpha)  # exchanges the halo, then the kernel
        u, v = v, u
        if step_delay:
            time.sleep(step_delay)
        if faults:  # fault injection (tests, demos); skipped cheaply otherwise
            inject_failure(step, die_at_step, die_rank, comm, wipe=die_wipe)
            for fault_step, fault_rank in more_faults:
                inject_failure(step, fault_step, fault_rank, comm)
        if checkpointer is not None:
            checkpointer.checkpoint_if_due(step, arrays={"u": u}, scalars={"alpha": alpha, "n": n})
        if series is not None and step % series_every == 0:
            series.append(step, float(step), fields={"u": u}, scalars={"total": u.sum()})
        if progress and step % report == 0:
            log.info("step %d/%d (%.0f%%)", step, steps, 100.0 * step / steps)
    if checkpointer is not None:
        checkpointer.close()
    if series is not None:
        series.close()  # commits the last record
    comm.Barrier()
    ran = steps - start
    return u, time.perf_counter() - t0, halo_time / max(sampled, 1) * ran, ran


def write_outputs(u: DistArray, out: Path, attrs: dict, png: bool) -> list[Path]:
    """Write ``heat2d.h5`` (in parallel, atomically: no gather) and, from a subsample read
    back on rank 0, ``heat2d.png`` into ``out``; return the paths (collective)."""
    from parcomp import raise_if_any

    error = None
    if u.rank == 0:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            error = parcomp.ConfigError(f"--out {out}: {exc}")
    raise_if_any(error, u.comm)
    target = u.to_hdf5(out / "heat2d.h5", "u", attrs=attrs)
    written = [target]
    if png and u.rank == 0:
        import h5py
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        n = u.global_shape[0]
        stride = max(1, n // 1024)  # at most about 1024^2 pixels read on rank 0
        with h5py.File(target, "r") as fh:
            image_data = fh["u"][::stride, ::stride]
        fig, ax = plt.subplots(figsize=(5, 4.2))
        image = ax.imshow(image_data, origin="lower", cmap="inferno")
        fig.colorbar(image, ax=ax, label="temperature")
        ax.set_title(f"heat2d: {n}x{u.global_shape[1]}, {attrs['steps']} steps")
        fig.tight_layout()
        fig.savefig(out / "heat2d.png", dpi=100)
        plt.close(fig)
        written.append(out / "heat2d.png")
    return written


def checksum(field: np.ndarray) -> str:
    """SHA-256 of the field's bytes (C order, little-endian float64)."""
    return hashlib.sha256(np.ascontiguousarray(field, dtype="<f8").tobytes()).hexdigest()


def checksum_file(path: Path, name: str = "u", rows: int = 256) -> str:
    """:func:`checksum` of a dataset in a file, read a slab of rows at a time (bounded
    memory: rank 0 never holds the whole field)."""
    import h5py

    digest = hashlib.sha256()
    with h5py.File(path, "r") as fh:
        dset = fh[name]
        for a in range(0, dset.shape[0], rows):
            digest.update(np.ascontiguousarray(dset[a : a + rows], dtype="<f8").tobytes())
    return digest.hexdigest()


def _fault(text: str) -> tuple[int, int]:
    step, _, rank = text.partition(":")
    if not (step.isdigit() and rank.isdigit()):
        raise argparse.ArgumentTypeError(f"expected STEP:RANK, got {text!r}")
    return int(step), int(rank)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1024, help="grid cells per side (default 1024)")
    parser.add_argument("--steps", type=int, default=1000, help="time steps (default 1000)")
    parser.add_argument("--alpha", type=float, default=0.24, help="kappa*dt/dx^2, <= 0.25")
    parser.add_argument("--out", type=Path, default=Path("out/heat2d"), help="output directory")
    parser.add_argument("--no-png", action="store_true", help="skip the PNG image")
    parser.add_argument(
        "--series-every",
        type=int,
        default=None,
        help="append u and its sum to OUT/series.h5 every N steps (a CF time series that "
        "xarray and ParaView open; continued after a restart)",
    )
    parser.add_argument("--checkpoint-dir", type=Path, default=None, help="checkpoint/resume here")
    parser.add_argument(
        "--checkpoint-every", type=int, default=None, help="checkpoint every N steps"
    )
    parser.add_argument(
        "--checkpoint-seconds", type=float, default=None, help="... or every S seconds"
    )
    parser.add_argument(
        "--async-checkpoint", action="store_true", help="write checkpoints in the background"
    )
    parser.add_argument("--keep", type=int, default=2, help="checkpoints to keep")
    parser.add_argument(
        "--mpio",
        action="store_true",
        help="write each checkpoint as one file, collectively (needs h5py built with MPI)",
    )
    parser.add_argument(
        "--local-dir",
        type=Path,
        default=None,
        help="node-local checkpoint tier (e.g. /dev/shm/job) with partner copies; "
        "--checkpoint-dir receives flushed copies",
    )
    parser.add_argument(
        "--flush-every",
        type=int,
        default=1,
        help="with --local-dir: flush every K-th checkpoint to --checkpoint-dir (default 1)",
    )
    parser.add_argument(
        "--die-at-step",
        type=int,
        default=None,
        help="fault injection: SIGKILL a rank at this step (first attempt only)",
    )
    parser.add_argument("--die-rank", type=int, default=0, help="fault injection: which rank dies")
    parser.add_argument(
        "--die",
        type=_fault,
        action="append",
        default=[],
        metavar="STEP:RANK",
        help="fault injection: also SIGKILL world rank RANK at STEP (repeatable)",
    )
    parser.add_argument(
        "--die-in-recovery",
        type=int,
        default=None,
        metavar="RANK",
        help="fault injection: SIGKILL world rank RANK as the survivors of an in-job "
        "recovery start restoring (a second failure during recovery)",
    )
    parser.add_argument(
        "--die-wipe",
        type=Path,
        action="append",
        default=[],
        help="fault injection: delete this folder as the rank dies (a lost node's storage)",
    )
    parser.add_argument(
        "--step-delay", type=float, default=0.0, help="sleep per step (to test signals)"
    )
    args = parser.parse_args(argv)
    if args.n < 1 or args.steps < 0:
        raise parcomp.ConfigError(
            f"--n must be >= 1 and --steps >= 0, got {args.n} and {args.steps}"
        )
    if not 0 < args.alpha <= 0.25:
        raise parcomp.ConfigError(f"--alpha must be in (0, 0.25] for stability, got {args.alpha}")
    log = parcomp.get_logger("parcomp.jobs.heat2d")
    if args.series_every is not None and args.series_every < 1:
        raise parcomp.ConfigError(f"--series-every must be >= 1, got {args.series_every}")
    if args.local_dir is not None and args.checkpoint_dir is None:
        raise parcomp.ConfigError("--local-dir needs --checkpoint-dir (where flushed copies go)")

    def job(comm):
        # Called again on the survivors after an in-job recovery (parcomp run --ulfm).
        from parcomp import recoveries

        if args.die_in_recovery is not None and recoveries() == 1:
            inject_failure(0, 0, args.die_in_recovery, comm)  # the others are restoring
        ckpt = None
        if args.checkpoint_dir is not None:
            from parcomp import Checkpointer

            ckpt = Checkpointer(
                args.checkpoint_dir,
                every=args.checkpoint_every,
                every_seconds=args.checkpoint_seconds,
                keep=args.keep,
                asynchronous=args.async_checkpoint,
                local_directory=args.local_dir,
                flush_every=args.flush_every,
                mpio=args.mpio,
                comm=comm,
            )
        return simulate(
            args.n,
            args.steps,
            args.alpha,
            comm=comm,
            progress=True,
            checkpointer=ckpt,
            die_at_step=args.die_at_step,
            die_rank=args.die_rank,
            step_delay=args.step_delay,
            die_wipe=tuple(str(p) for p in args.die_wipe),
            more_faults=tuple(args.die),
            series_every=args.series_every,
            series_path=args.out / "series.h5",
        )

    u, seconds, halo, ran = parcomp.run_resilient(job)
    # No gather: the error and the sum are collective reductions, the field is written in
    # parallel, and rank 0 hashes the file slab by slab.
    n = args.n
    reference = DistArray.fromfunction(
        exact_at(n, args.steps, args.alpha), (n, n), dims=u.partition.dims, comm=u.comm
    )
    error = (u - reference).norm(np.inf)
    total = u.sum(deterministic=True)
    attrs = {
        "steps": args.steps,
        "alpha": args.alpha,
        "ranks": u.partition.size,
        "process_grid": "x".join(str(d) for d in u.partition.dims),
        "max_abs_error_vs_exact": error,
        "description": "u: temperature after the last step, indexed [i, j]",
    }
    paths = write_outputs(u, args.out, attrs, png=not args.no_png)
    if u.rank == 0:
        rate = n * n * ran / seconds / 1e9 if seconds > 0 else float("nan")
        log.info(
            "%.3f Gcell/s, halo exchange %.1f%% of step time",
            rate,
            100 * halo / max(seconds, 1e-12),
        )
        print(
            f"heat2d {n}x{n}, {args.steps} steps on {u.partition.size} ranks "
            f"(grid {u.partition.dims}) in {seconds:.2f} s"
        )
        print(f"max |u - exact| = {error:.3e}; sum = {total:.12e}")
        print(f"sha256 = {checksum_file(paths[0])}")
        print("wrote " + ", ".join(str(p) for p in paths))


if __name__ == "__main__":
    main()
