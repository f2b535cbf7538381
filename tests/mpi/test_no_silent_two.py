"""Issue "no silent wrong answers, round two": each ordinary mistake a new user made that
gave a wrong answer with no error, now refused or right.  Run on 1-4 ranks.

Each test names what today's code (before this change) did instead.
"""

import numpy as np
import pytest
from mpi4py import MPI

import parcomp
from parcomp.array import DistArray
from parcomp.declared import run_stencil
from parcomp.errors import KernelSignatureError
from parcomp.testing import parallel_assert

RANK = MPI.COMM_WORLD.rank
SIZE = MPI.COMM_WORLD.size


# ---------------------------------------------------------------- 1. stores into read fields
def _store_into_read(u, out):
    for i in range(1, u.shape[0] - 1):
        for j in range(1, u.shape[1] - 1):
            out[i, j] = u[i - 1, j] + u[i + 1, j] + u[i, j - 1] + u[i, j + 1]
            u[i, j] = 0.5 * u[i, j]


def _augmented_store(u, out):
    for i in range(1, u.shape[0] - 1):
        out[i] = u[i - 1] + u[i + 1]
        u[i] *= 0.5


def _store_through_alias(u, out):
    w = u[1:-1]
    for i in range(1, u.shape[0] - 1):
        out[i] = u[i - 1] + u[i + 1]
        w[i - 1] = 0.0


def _store_through_chain(u, out, a):
    v = u
    w = v.T
    for i in range(1, u.shape[0] - 1):
        for j in range(1, u.shape[1] - 1):
            out[i, j] = a * (u[i - 1, j] + u[i + 1, j])
            w[j, i] = out[i, j]


@pytest.mark.parametrize(
    "kernel, where",
    [
        (_store_into_read, r"u\[i, j\] = 0.5"),
        (_augmented_store, r"u\[i\] \*= 0.5"),
        (_store_through_alias, r"w\[i - 1\] = 0.0"),
        (_store_through_chain, r"w\[j, i\] = out"),
    ],
    ids=["plain", "augmented", "alias", "alias-chain"],
)
def test_store_into_a_read_field_is_refused_at_declaration(kernel, where):
    # was: ran, 93.075 on 1 rank, 94.511 on 2, 95.856 on 3 (also overlap=True and steps=2)
    with pytest.raises(KernelSignatureError, match=rf"u is read with its neighbours.*{where}"):
        parcomp.stencil(radius=1)(kernel)
    with pytest.raises(KernelSignatureError, match="stores into it"):
        parcomp.stencil(radius=1, corners=True)(kernel)
    parallel_assert(True)


def test_radius_zero_and_pointwise_keep_in_place_updates():
    @parcomp.stencil(radius=0, reads=("u",), writes=("out",))
    def scale(u, out):
        for i in range(u.shape[0]):
            for j in range(u.shape[1]):
                out[i, j] = 2.0 * u[i, j]
                u[i, j] = 0.0

    @parcomp.stencil(radius=1, reads=("u",), writes=("out", "old"), pointwise=("old",))
    def leap(u, out, old):
        for i in range(1, u.shape[0] - 1):
            for j in range(1, u.shape[1] - 1):
                out[i, j] = u[i - 1, j] + u[i + 1, j] - old[i, j]
                old[i, j] = u[i, j]

    u = DistArray.fromfunction(lambda i, j: i + 0.5 * j, (9, 7), halo=1)
    out = u.zeros_like()
    run_stencil(scale, u, out)
    i, j = np.meshgrid(np.arange(9), np.arange(7), indexing="ij")
    got = out.gather()
    parallel_assert(RANK != 0 or np.array_equal(got, 2.0 * (i + 0.5 * j)))
    parallel_assert(u.max() == 0.0 and u.min() == 0.0)
    assert leap.spec.pointwise == ("old",)


# ---------------------------------------------------------------- 4. FFT metadata travels
def test_rfftn_result_knows_its_frequencies():
    # was: frequencies(F) of an rfftn result gave fftfreq values (negatives too) on the
    # halved axis, silently
    from parcomp import fft

    shape = (6, 8, 9)  # an odd halved axis
    g = np.random.default_rng(3).standard_normal(shape)
    a = DistArray.from_global(g if RANK == 0 else None)
    F = fft.rfftn(a)
    fx, fy, fz = fft.frequencies(F, spacing=(0.5, 1.0, 2.0))
    (lx, hx), (ly, hy), (lz, hz) = F.local_range
    ok = (
        np.array_equal(fz.ravel(), np.fft.rfftfreq(9, 2.0)[lz:hz])
        and np.array_equal(fx.ravel(), np.fft.fftfreq(6, 0.5)[lx:hx])
        and np.array_equal(fy.ravel(), np.fft.fftfreq(8, 1.0)[ly:hy])
    )
    parallel_assert(ok, "frequencies of an rfftn result")
    # kept by arithmetic, zeros_like and redistribute; angular=True gives 2 pi f
    W = 1j * F
    kz = fft.frequencies(W.redistribute(), angular=True)[2]
    parallel_assert(bool(np.all(kz >= 0)), "angular wavenumbers of the halved axis")
    kz0 = fft.frequencies(F.zeros_like(), angular=True)[2]
    parallel_assert(np.allclose(kz0, 2 * np.pi * np.fft.rfftfreq(9)[lz:hz].reshape(1, 1, -1)))
    # irfftn round-trips the odd length without s=
    back = fft.irfftn(F, out_dims=a.partition.dims).gather()
    parallel_assert(RANK != 0 or (back.shape == shape and np.allclose(back, g, atol=1e-12)))
    # a shape contradicting the transform, or no metadata at all, is refused
    with pytest.raises(parcomp.errors.ShapeError, match="transform of a"):
        fft.frequencies(F, shape=(6, 8, 10))
    with pytest.raises(parcomp.errors.ShapeError, match="pass shape="):
        fft.frequencies(DistArray.zeros((6, 8, 5), dtype=np.complex128))
    parallel_assert(True)


# ---------------------------------------------------------------- 3. mismatched collectives
def _field():
    return DistArray.fromfunction(lambda i, j: np.sin(0.1 * i) + np.cos(0.2 * j), (24, 20), halo=1)


def _lone(mine, theirs):
    """Rank 0 calls ``mine``, the others ``theirs``: a CollectiveError on every rank that
    names both calls (on one rank there is nothing to mismatch: ``mine`` just runs)."""
    if SIZE == 1:
        return mine()
    with pytest.raises(parcomp.errors.CollectiveError) as info:
        mine() if RANK == 0 else theirs()
    return str(info.value)


@pytest.mark.parametrize(
    "rank0, others, names",
    [
        ("max", "sum", ("DistArray.max", "DistArray.sum")),
        ("dot", "sum", ("DistArray.dot", "DistArray.sum")),
        ("sum0", "sum", ("DistArray.sum", "DistArray.sum")),  # a row of sums vs one sum
        ("maxaxis", "min", ("DistArray.max", "DistArray.min")),
        ("count", "sum", ("DistParticles.count", "DistArray.sum")),
        ("max", "new_array", ("DistArray.max", "DistArray()")),
        ("exact", "norm", ("DistArray.sum", "DistArray.norm")),
    ],
)
def test_lone_collective_raises_on_every_rank_naming_both(rank0, others, names):
    # was: rank 0's max met the others' sum: it printed 3075.07 for a field below 3, then
    # the job hung (2 ranks) or died in a 24-line "Message truncated" (3 ranks); a lone
    # count() was an MPICH fatal error with no Python traceback (status 142)
    from parcomp.particles import DistParticles

    u = _field()
    big = DistArray.zeros((400, 30), halo=1)  # a row of 30 sums: more than one slot
    parts = DistParticles(u, {"x": np.full((RANK + 1, 2), 1.0)}, box=[(0, 24), (0, 20)])
    calls = {
        "max": u.max,
        "sum": u.sum,
        "dot": lambda: u.dot(u),
        "sum0": lambda: big.sum(axis=0),
        "maxaxis": lambda: big.max(axis=1),
        "min": u.min,
        "count": parts.count,
        "new_array": lambda: DistArray.zeros((8, 8)),
        "exact": lambda: u.sum(deterministic=True),
        "norm": u.norm,
    }
    text = _lone(calls[rank0], calls[others])
    if SIZE > 1:
        ok = (
            f"rank 0 is in {names[0]}" in text
            and f"in {names[1]}" in text
            and "test_no_silent_two.py:" in text  # the user's line
        )
        parallel_assert(ok, text)
    # the communicator is still usable, and the values right
    total = u.sum()
    i, j = np.meshgrid(np.arange(24), np.arange(20), indexing="ij")
    parallel_assert(abs(total - np.sum(np.sin(0.1 * i) + np.cos(0.2 * j))) < 1e-9)
    parallel_assert(parts.count() == SIZE * (SIZE + 1) // 2)


def test_matching_collectives_are_not_flagged_on_subcommunicators():
    # ranks split in two groups making different numbers of calls on their own halves,
    # then meeting again on the whole communicator: numbers are per communicator
    world = MPI.COMM_WORLD.Dup()
    half = world.Split(RANK % 2, RANK)
    a = DistArray.fromfunction(lambda i: i * 1.0, (12,), comm=half)
    for _ in range(1 + RANK % 2 * 3):
        a.sum()
    b = DistArray.fromfunction(lambda i: i * 1.0, (12,), comm=world)
    parallel_assert(b.sum() == 66.0 and b.max() == 11.0)
    half.Free()
    world.Free()


# ---------------------------------------------------------------- 5. parameters and rotations
@parcomp.stencil(radius=1)
def _heat(u, out, a):
    for i in range(1, u.shape[0] - 1):
        for j in range(1, u.shape[1] - 1):
            out[i, j] = u[i, j] + a * (
                u[i - 1, j] + u[i + 1, j] + u[i, j - 1] + u[i, j + 1] - 4.0 * u[i, j]
            )


def test_parameter_from_the_local_block_is_refused_on_the_first_call():
    # was: each rank stepped with its own alpha (checked only with PARCOMP_DEBUG_COLLECTIVES)
    u = DistArray.fromfunction(lambda i, j: 1.0 + i + 0.1 * j, (24, 12), halo=1)
    v = u.zeros_like()
    alpha = 0.1 / float(u.interior.max())  # this rank's block only
    if SIZE == 1:
        run_stencil(_heat, u, v, alpha)
        parallel_assert(True)
        return
    with pytest.raises(KernelSignatureError, match=r"other parameter values.*a: "):
        run_stencil(_heat, u, v, alpha)
    run_stencil(_heat, u, v, 0.1 / float(u.max()))  # the global maximum: the same everywhere
    parallel_assert(True)


@pytest.mark.parametrize("steps", [None, 2])
def test_parameter_that_starts_to_differ_later_is_caught_within_a_sample(steps):
    from parcomp.multistep import SAMPLE_STEPS
    from parcomp.stencil_run import SAMPLE

    u = DistArray.fromfunction(lambda i, j: 1.0 + i + 0.1 * j, (24, 12), halo=2)
    v = u.zeros_like()
    limit = 2 * SAMPLE + 20 if steps is None else SAMPLE_STEPS + 20
    caught = None
    for call in range(limit):
        a = 0.01 if call < 10 else 0.01 + 1e-3 * RANK  # differs from call 10 on
        try:
            if steps is None:
                run_stencil(_heat, u, v, a)
                u, v = v, u
            else:
                u, v, _ = run_stencil(_heat, u, v, a, steps=steps)
        except KernelSignatureError as exc:
            caught = (call, str(exc))
            break
    if SIZE == 1:
        parallel_assert(caught is None)
    else:
        parallel_assert(caught is not None and "other parameter values" in caught[1], caught)


def test_partial_rotate_is_refused():
    # was: rotate={"h": "h2", "h2": "h"} left u/u2 unrotated without a word
    @parcomp.stencil(radius=1, reads=("h", "u"), writes=("h2", "u2"))
    def shallow(h, u, h2, u2):
        for i in range(1, h.shape[0] - 1):
            h2[i] = h[i] - 0.1 * (u[i + 1] - u[i - 1])
            u2[i] = u[i] - 0.1 * (h[i + 1] - h[i - 1])

    h = DistArray.fromfunction(lambda i: 1.0 + 0.01 * i, (30,), halo=2)
    u, h2, u2 = h.zeros_like(), h.zeros_like(), h.zeros_like()
    with pytest.raises(KernelSignatureError, match=r"leaves u \(read\) and u2"):
        run_stencil(shallow, h, u, h2, u2, steps=2, rotate={"h": "h2", "h2": "h"})
    whole = {"h": "h2", "h2": "h", "u": "u2", "u2": "u"}
    out = run_stencil(shallow, h, u, h2, u2, steps=2, rotate=whole)
    default = run_stencil(shallow, *[x.zeros_like() for x in (h, u, h2, u2)], steps=2)
    parallel_assert(len(out) == 4 and len(default) == 4)


# ---------------------------------------------------------------- 2. CF decoding on input
@pytest.fixture
def shared(tmp_path_factory):
    from pathlib import Path

    return Path(MPI.COMM_WORLD.bcast(str(tmp_path_factory.mktemp("cf")) if RANK == 0 else None))


def _temperature(shape=(13, 10)):
    rng = np.random.default_rng(7)
    t = 3.0 + rng.standard_normal(shape)
    t[2, 3] = np.nan  # a missing cell
    t[-1, -1] = np.nan
    return t


@pytest.mark.parametrize(
    "encoding",
    [
        # how xarray and most netCDF writers pack: int16, float32 scale/offset, a fill value
        {
            "dtype": "int16",
            "scale_factor": np.float32(0.01),
            "add_offset": np.float32(3.0),
            "_FillValue": np.int16(-32767),
        },
        {"dtype": "int16", "scale_factor": 0.001, "add_offset": 2.5, "_FillValue": -9999},
        {"dtype": "int32", "scale_factor": 1e-6, "_FillValue": -1},  # float64 result
        {"dtype": "float32", "_FillValue": np.float32(-999.0)},  # masked only
        {
            "dtype": "uint8",
            "scale_factor": np.float32(0.05),
            "add_offset": np.float32(0.0),
            "_FillValue": np.uint8(255),
        },
    ],
    ids=["int16-f32", "int16-f64", "int32-scale", "float32-fill", "uint8"],
)
def test_cf_packed_variable_decodes_as_xarray(shared, encoding):
    # was: the stored integers came back (mean 312.03 instead of 3.12)
    import xarray as xr

    path = shared / "packed.nc"
    t = _temperature()
    if encoding["dtype"] == "uint8":
        t = np.clip(np.nan_to_num(t, nan=-1) + 2.0, 0, 12)
        t[4, 4] = np.nan
    if RANK == 0:
        ds = xr.Dataset({"t": (("y", "x"), t, {"units": "degC", "long_name": "temperature"})})
        ds.to_netcdf(path, engine="h5netcdf", encoding={"t": encoding})
    MPI.COMM_WORLD.Barrier()
    expected = xr.open_dataset(path, engine="h5netcdf")["t"].values
    a = parcomp.load_hdf5(path, "t")
    got = a.gather()
    ok = RANK != 0 or (
        got.dtype == expected.dtype
        and np.array_equal(got, expected, equal_nan=True)
        and np.isnan(got).sum() == np.isnan(expected).sum() > 0
    )
    parallel_assert(ok, f"decoded {None if got is None else got.dtype} vs xarray {expected.dtype}")
    parallel_assert(a.attrs.get("units") == "degC" and a.attrs.get("long_name") == "temperature")
    raw = parcomp.load_hdf5(path, "t", decode=False)
    parallel_assert(raw.dtype == np.dtype(encoding["dtype"]))
    # the values, not the stored integers: the mean is the data's (3.1, not 312)
    parallel_assert(RANK != 0 or abs(np.nanmean(got) - np.nanmean(t)) < 0.05)


def test_cf_valid_range_unsigned_and_missing_value(shared):
    import h5py

    path = shared / "cf.h5"
    stored = np.arange(-6, 6, dtype=np.int8).reshape(3, 4)
    if RANK == 0:
        with h5py.File(path, "w") as fh:
            d = fh.create_dataset("u", data=stored)
            d.attrs["_Unsigned"] = np.bytes_(b"true")
            d.attrs["scale_factor"] = np.array([0.5], np.float32)
            d.attrs["add_offset"] = np.array([1.0], np.float32)
            d.attrs["missing_value"] = np.array([-6], np.int8)  # stored as 250 unsigned
            d.attrs["valid_range"] = np.array([0, 200], np.uint8)
            d.attrs["units"] = np.bytes_(b"m s-1")
    MPI.COMM_WORLD.Barrier()
    u = parcomp.load_hdf5(path, "u").gather()
    unsigned = stored.view(np.uint8).astype(np.float32)
    ref = unsigned * np.float32(0.5) + np.float32(1.0)
    ref[(unsigned == 250) | (unsigned > 200)] = np.nan  # missing, and beyond valid_range
    ok = RANK != 0 or (u.dtype == np.float32 and np.array_equal(u, ref, equal_nan=True))
    parallel_assert(ok, f"{u} vs {ref}")
    with pytest.raises(parcomp.errors.DTypeError, match="CF-decoded"):
        parcomp.load_hdf5(path, "u", dtype=np.int8)
    parallel_assert(parcomp.load_hdf5(path, "u", dtype=np.int8, decode=False).dtype == np.int8)
