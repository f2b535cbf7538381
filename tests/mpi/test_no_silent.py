"""The traps a new user fell into (issue "no silent wrong answers"), each now an error.

Each test states the old behaviour it replaces: a wrong number, a hang or a 52-line Numba
trace.  Run on 1-4 ranks; every error must be raised on every rank together.
"""

import math

import numpy as np
import pytest
from mpi4py import MPI

import parcomp
from parcomp import run_stencil
from parcomp.arrays.array import DistArray
from parcomp.runtime.errors import KernelSignatureError, ShapeError
from parcomp.testing import parallel_assert

RANK = MPI.COMM_WORLD.rank
SIZE = MPI.COMM_WORLD.size


def five_point(u, out, a):
    for i in range(1, u.shape[0] - 1):
        for j in range(1, u.shape[1] - 1):
            out[i, j] = u[i, j] + a * (
                u[i - 1, j] + u[i + 1, j] + u[i, j - 1] + u[i, j + 1] - 4.0 * u[i, j]
            )


declared = parcomp.stencil(radius=1)(five_point)
undeclared = parcomp.jit(five_point)


def initial(i, j):
    return np.sin(0.3 * i) + np.cos(0.2 * j) + 1.0


def reference(n, steps, a):
    """Serial NumPy, zero Dirichlet ghosts (what halo=1 arrays hold outside the domain)."""
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    u = initial(i, j)
    for _ in range(steps):
        p = np.pad(u, 1)
        u = p[1:-1, 1:-1] + a * (
            p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:] - 4.0 * p[1:-1, 1:-1]
        )
    return u


@pytest.mark.parametrize("kernel", [declared, undeclared], ids=["declared", "undeclared"])
def test_stencil_on_arrays_without_ghosts_raises(kernel):
    # was: sums 206.87 / 190.87 / 189.75 on 1 / 2 / 4 ranks, right answer 129.92, no warning
    u = DistArray.fromfunction(initial, (16, 16))
    v = u.zeros_like()
    with pytest.raises(ShapeError, match="halo"):
        run_stencil(kernel, u, v, 0.1)
    parallel_assert(True)


def test_declared_stencil_with_halo_matches_numpy():
    u = DistArray.fromfunction(initial, (16, 16), halo=1)
    v = u.zeros_like()
    for _ in range(5):
        run_stencil(declared, u, v, 0.1)
        u, v = v, u
    got = u.gather()
    ok = np.allclose(got, reference(16, 5, 0.1), rtol=0, atol=1e-14) if RANK == 0 else True
    parallel_assert(ok)


def test_radius_two_needs_halo_two():
    wide = parcomp.stencil(radius=2)(five_point)
    u = DistArray.zeros((16, 16), halo=1)
    with pytest.raises(ShapeError, match=r"reads \(2, 2\) cells.*halo \(1, 1\)"):
        run_stencil(wide, u, u.zeros_like(), 0.1)
    # five_point reads u[i, j + 1]: declaring radius 0 on axis 1 is refused at once
    with pytest.raises(KernelSignatureError, match=r"reads u\[i, j \+ 1\].*radius \(1, 0\)"):
        parcomp.stencil(radius=(1, 0))(five_point)

    @parcomp.stencil(radius=(1, 0))
    def rows_only(u, out, a):
        for i in range(1, u.shape[0] - 1):
            for j in range(u.shape[1]):
                out[i, j] = u[i - 1, j] + a * u[i + 1, j]

    w = DistArray.zeros((16, 16), halo=(1, 0))
    run_stencil(rows_only, w, w.zeros_like(), 0.1)  # fits: axis 1 needs no ghosts
    parallel_assert(True)


def test_declaration_contradicted_by_the_source_is_refused():
    # was: a 9-point kernel declared corners=False gave errors of 3.86 (periodic) on every
    # rank count, silently
    with pytest.raises(KernelSignatureError, match=r"reads u\[i - 1, j - 1\], a diagonal"):

        @parcomp.stencil(radius=1, corners=False)
        def nine(u, out):
            for i in range(1, u.shape[0] - 1):
                for j in range(1, u.shape[1] - 1):
                    out[i, j] = u[i - 1, j - 1] + u[i + 1, j + 1] + u[i, j]

    with pytest.raises(KernelSignatureError, match=r"reads u\[i \+ 2\], 2 cell"):

        @parcomp.stencil(radius=1)
        def wide(u, out):
            for i in range(2, u.shape[0] - 2):
                out[i] = u[i + 2] - u[i - 1]

    parallel_assert(True)


def test_thin_axis_needs_its_halo_too():
    # was: shape (9, 1) with halo (1, 0) and radius 1: the kernel's loop over axis 1 never
    # ran and the output stayed zero (error 210), silently
    u = DistArray.full((9, 1), 1.0, halo=(1, 0))
    with pytest.raises(ShapeError, match="too narrow on axis"):
        run_stencil(declared, u, u.zeros_like(), 0.1)
    parallel_assert(True)


def test_distarray_as_plain_parameter_raises():
    @parcomp.stencil(radius=1, reads=("u",), writes=("out",))
    def scaled(u, out, k):
        for i in range(1, u.shape[0] - 1):
            out[i] = u[i - 1] * k[i]

    u = DistArray.zeros((12,), halo=1)
    with pytest.raises(KernelSignatureError, match="plain parameter but got a DistArray"):
        run_stencil(scaled, u, u.zeros_like(), u.zeros_like())
    parallel_assert(True)


def test_distarray_passed_to_kernel_directly_names_it():
    # was: "Cannot determine Numba type of <class 'parcomp.arrays.array.DistArray'>"
    u = DistArray.zeros((8, 8), halo=1)
    with pytest.raises(KernelSignatureError, match=r"argument 1 \(u\) is a DistArray.*\.local"):
        undeclared(u, u.local, 0.1)
    parallel_assert(True)


def test_wrong_arity_is_one_line():
    # was: a raw 52-line numba TypingError on every rank
    u = DistArray.zeros((8, 8), halo=1)
    with pytest.raises(KernelSignatureError, match=r"takes 3 argument\(s\) \(u, out, a\), got 2"):
        run_stencil(declared, u, u.zeros_like())
    with pytest.raises(KernelSignatureError, match=r"takes 3 argument\(s\) \(u, out, a\), got 4"):
        undeclared(u.local, u.local, 0.1, 2)
    parallel_assert(True)


def test_name_error_in_kernel_is_short_and_points_at_the_line():
    # was: NameError buried in 74 lines, once per rank
    @parcomp.stencil(radius=1)
    def typo(u, out, alpha):
        for i in range(1, u.shape[0] - 1):
            out[i] = u[i] + alfa * u[i - 1]  # noqa: F821 - the typo under test

    u = DistArray.zeros((12,), halo=1)
    with pytest.raises(KernelSignatureError) as info:
        run_stencil(typo, u, u.zeros_like(), 0.5)
    text = str(info.value)
    parallel_assert("NameError: name 'alfa' is not defined" in text, text)
    parallel_assert("out[i] = u[i] + alfa * u[i - 1]" in text, text)
    parallel_assert(len(text.splitlines()) <= 15, text)
    # every rank raised it: the agreement marks it so that it is printed once
    report = getattr(info.value, "parcomp_report", None)
    parallel_assert(report is not None and report[0] == 0, str(report))


def test_in_place_update_refused_unless_pointwise():
    with pytest.raises(KernelSignatureError, match="in place"):
        parcomp.stencil(radius=1, reads=("u",), writes=("u",))(lambda u, a: None)

    @parcomp.stencil(radius=0, reads=("u",), writes=("u",))
    def scale(u, a):
        for i in range(u.shape[0]):
            u[i] *= a

    u = DistArray.full((10,), 2.0)  # no ghost cells: a pointwise kernel needs none
    run_stencil(scale, u, 3.0)
    parallel_assert(u.sum() == 60.0)


def test_declaration_checked_against_signature():
    with pytest.raises(KernelSignatureError, match=r"not parameters of the kernel \('u', 'out'\)"):
        parcomp.stencil(reads=("v",))(lambda u, out: None)
    with pytest.raises(KernelSignatureError, match="radius must be"):
        parcomp.stencil(radius=-1)(lambda u, out: None)
    parallel_assert(True)


@pytest.mark.skipif(SIZE < 3, reason="needs a sub-communicator that leaves ranks out")
def test_subcommunicator_arrays_do_not_shift_world_tags():
    # was: ranks 0-1 make an array on a sub-communicator, then everyone makes one on the
    # world and exchanges halos: on 3 ranks, ranks 1 and 2 hung forever (tags from one
    # process-wide counter disagreed between ranks)
    world = parcomp.default_comm()
    sub = world.Split(0 if RANK < 2 else MPI.UNDEFINED, RANK)
    if sub != MPI.COMM_NULL:
        a = DistArray.zeros((8,), halo=1, comm=sub)
        a.exchange_halos()
    u = DistArray.fromfunction(lambda i: i * 1.0, (4 * SIZE,), halo=1, periods=True)
    u.exchange_halos()
    lo, hi = u.local_range[0]
    n = 4 * SIZE
    parallel_assert(u.local[0] == (lo - 1) % n and u.local[-1] == hi % n, str(u.local))
    if sub != MPI.COMM_NULL:
        sub.Free()


def test_four_dimensional_arrays_exchange():
    # tags are direction indices (3**ndim - 1 <= 80), checked against MPI_TAG_UB
    G = np.arange(5 * 4 * 3 * 4, dtype=np.float64).reshape(5, 4, 3, 4)
    u = DistArray.from_global(G if RANK == 0 else None, halo=1, periods=True)
    u.exchange_halos(corners=True)
    padded = np.pad(G, 1, mode="wrap")
    index = tuple(slice(a, b + 2) for a, b in u.local_range)
    parallel_assert(np.array_equal(u.local, padded[index]))


def test_differing_checkpoint_scalars_raise(tmp_path_factory):
    from parcomp.checkpoint import Checkpointer
    from parcomp.runtime.errors import ConfigError

    folder = MPI.COMM_WORLD.bcast(str(tmp_path_factory.mktemp("ck")) if RANK == 0 else None)
    ck = Checkpointer(folder)
    u = DistArray.zeros((8,))
    if SIZE > 1:
        # was: rank 0's value silently saved for everyone
        with pytest.raises(ConfigError, match="scalars differ between ranks"):
            ck.save(1, arrays={"u": u}, scalars={"t": float(RANK)})
    ck.save(2, arrays={"u": u}, scalars={"t": 1.5, "bad": float("nan"), "big": [float("-inf")]})
    ck.close()
    back = Checkpointer(folder, handle_signals=False).restore().scalars
    # was: NaN and inf came back as {"__float__": "nan"} dicts
    parallel_assert(
        back["t"] == 1.5 and math.isnan(back["bad"]) and back["big"] == [-math.inf], str(back)
    )


def test_checkpointer_refuses_unwritable_directory(tmp_path_factory):
    from parcomp.checkpoint import Checkpointer
    from parcomp.runtime.errors import CheckpointError

    base = MPI.COMM_WORLD.bcast(str(tmp_path_factory.mktemp("ro")) if RANK == 0 else None)
    if RANK == 0:
        with open(f"{base}/file", "w") as fh:
            fh.write("x")
    MPI.COMM_WORLD.Barrier()
    # was: accepted; the error came at the first save, possibly hours later
    for bad in (f"{base}/file/sub", "/proc/parcomp-ck"):
        with pytest.raises(CheckpointError, match="cannot write checkpoints"):
            Checkpointer(bad)
    parallel_assert(True)


@pytest.mark.skipif(SIZE < 2, reason="needs ranks that can disagree")
def test_differing_checkpoint_step_rng_and_directory_raise(tmp_path_factory):
    from parcomp.checkpoint import Checkpointer
    from parcomp.runtime.errors import ConfigError

    folder = MPI.COMM_WORLD.bcast(str(tmp_path_factory.mktemp("ck")) if RANK == 0 else None)
    # was: per-rank directories were accepted and the first save failed, once per rank
    with pytest.raises(ConfigError, match="checkpoint directories differ between ranks"):
        Checkpointer(f"{folder}/r{RANK}", handle_signals=False)
    ck = Checkpointer(folder, handle_signals=False)
    u = DistArray.zeros((8,))
    # was: step-9 and step-10 written, each labelled with rank 0's step
    with pytest.raises(ConfigError, match="checkpoint step differ between ranks"):
        ck.save(9 + RANK, arrays={"u": u})
    # was: every rank restored rank 0's stream (default_rng(1000 + rank) is common)
    with pytest.raises(ConfigError, match="checkpoint rng differ between ranks"):
        ck.save(10, arrays={"u": u}, rng={"noise": np.random.default_rng(1000 + RANK)})
    ck.save(10, arrays={"u": u}, rng={"noise": np.random.default_rng(1000)})
    ck.close()
    parallel_assert(True)


def test_map_over_a_set_or_differing_items_raises():
    from parcomp.runtime.errors import ConfigError

    words = {f"w{i}" for i in range(200)}
    # was: 20514 on 2 ranks, 19949 on 3 (right: 19900): each rank iterates a set in its
    # own hash order
    with pytest.raises(ConfigError, match="pass sorted"):
        parcomp.map_reduce(lambda w: int(w[1:]), words, "sum")
    parallel_assert(parcomp.map_reduce(lambda w: int(w[1:]), sorted(words), "sum") == 19900)
    if SIZE > 1:
        # was: range(10 + rank) on 3 ranks silently gave 66
        with pytest.raises(ConfigError, match="other work items than rank 0"):
            parcomp.map_reduce(lambda x: x, range(10 + RANK), "sum")
        shuffled = [f"w{i}" for i in range(50)]
        if RANK == 1:
            shuffled.reverse()
        with pytest.raises(ConfigError, match="same order"):
            parcomp.map(lambda w: w, shuffled)
    parallel_assert(True)


@pytest.mark.skipif(SIZE < 2, reason="needs ranks that can disagree")
def test_debug_mode_catches_parameters_that_differ_between_ranks(monkeypatch):
    import parcomp.runtime.watchdog as wd

    monkeypatch.setattr(wd, "_debug", True)
    u = DistArray.fromfunction(initial, (16, 16), halo=1)
    alpha = 0.1 / float(np.abs(u.interior).max())  # from this rank's block only
    with pytest.raises(KernelSignatureError, match="other parameter values on rank"):
        run_stencil(declared, u, u.zeros_like(), alpha)
    run_stencil(declared, u, u.zeros_like(), 0.1 / float(u.max()))  # global: fine
    parallel_assert(True)


def test_foreign_or_shared_directories_refused(tmp_path_factory):
    import os
    import stat

    from parcomp.checkpoint import Checkpointer
    from parcomp.runtime.errors import CheckpointError

    base = MPI.COMM_WORLD.bcast(str(tmp_path_factory.mktemp("own")) if RANK == 0 else None)
    shared, foreign = f"{base}/shared", f"{base}/foreign"
    if RANK == 0:
        os.mkdir(shared)
        os.chmod(shared, 0o777)  # as a user pre-creates it in /dev/shm
        os.mkdir(foreign)
        os.chown(foreign, 65534, 65534)  # nobody's (the tests run as root, as CI)
    MPI.COMM_WORLD.Barrier()
    # was: trusted, and a checkpoint planted there was restored
    with pytest.raises(CheckpointError, match="writable by others"):
        Checkpointer(shared, handle_signals=False)
    with pytest.raises(CheckpointError, match="belongs to uid 65534"):
        Checkpointer(foreign, handle_signals=False)
    Checkpointer(shared, handle_signals=False, shared_ok=True).close()
    # what parcomp creates is private whatever the umask
    old = os.umask(0)
    try:
        ck = Checkpointer(f"{base}/private/deep", handle_signals=False)
        ck.save(1, arrays={"u": DistArray.zeros((8,))})
        ck.close()
    finally:
        os.umask(old)
    modes = set()
    for root, dirs, files in os.walk(f"{base}/private"):
        for name in dirs + files:
            modes.add(stat.S_IMODE(os.stat(os.path.join(root, name)).st_mode))
    parallel_assert(modes <= {0o700, 0o600}, f"modes {sorted(oct(m) for m in modes)}")


@pytest.mark.timeout(60)
def test_layout_of_a_plain_array_differing_by_rank_does_not_split_the_agreement():
    # the first-call compile agreement was keyed on layout flags too: a parameter array
    # contiguous on some ranks and strided on others sent only some ranks into an allgather
    @parcomp.stencil(radius=1)
    def weighted(u, out, w):
        for i in range(1, u.shape[0] - 1):
            out[i] = u[i - 1] * w[0, 0] + u[i + 1]

    u = DistArray.full((12,), 1.0, halo=1)
    run_stencil(weighted, u, u.zeros_like(), np.ones((2, 2)))
    w = np.ones((2, 4))[:, ::2] if RANK == 0 else np.ones((2, 2))  # strided on rank 0 only
    v = u.zeros_like()
    run_stencil(weighted, u, v, w)
    # every cell is u[i-1] * 1 + u[i+1] = 2 (full() set the boundary ghosts to 1 as well)
    parallel_assert(float(v.sum()) == 2.0 * 12, f"{v.sum()}")
