"""Reading parcomp's output parts: the part's pages are mapped and each slab is copied and
summed in one pass (``parcomp.io.parts._read_slabs_mapped``).  Every region of every
layout reads back exactly what NumPy holds, into contiguous or strided (halo) results;
a flipped byte in any slab and a truncated part are HDF5Errors naming the slab."""

import itertools
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parcomp.io.parts import PartSource, read_region
from parcomp.io.slabs import checksum, copy_checksum, slab_bounds
from parcomp.runtime.errors import HDF5Error

PARTS = "out.h5.parts-0123456789ab"
CASES = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


def write_parts(folder: Path, data: np.ndarray, cuts: list[int], slab_rows: int) -> list:
    """Parts as save_hdf5 writes them, the rows of ``data`` cut at ``cuts`` (no MPI)."""
    (folder / PARTS).mkdir()
    edges = [0, *cuts, data.shape[0]]
    sources = []
    for r, (a, b) in enumerate(itertools.pairwise(edges)):
        block = data[a:b]
        with h5py.File(folder / PARTS / f"rank-{r:05d}.h5", "w") as fh:
            d = fh.create_dataset("u", data=block)
            d.attrs.update(
                {
                    "global_start": [a] + [0] * (data.ndim - 1),
                    "global_shape": list(data.shape),
                    "rank": r,
                    "nprocs": len(edges) - 1,
                    "slab_rows": slab_rows,
                    "slab_checksums": np.array(
                        [checksum(block[x:y]) for x, y in slab_bounds(b - a, slab_rows)], "S"
                    ),
                }
            )
        sources.append(PartSource(r, (a,) + (0,) * (data.ndim - 1), block.shape))
    return sources


@st.composite
def layouts(draw):
    ndim = draw(st.integers(1, 3))
    shape = tuple(draw(st.lists(st.integers(1, 9), min_size=ndim, max_size=ndim)))
    dtype = draw(st.sampled_from(["<f8", "<i8", "<f4", "<i2", "<c16", "u1"]))
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, shape[0] - 1)), max_size=3))))
    cuts = [c for c in cuts if 0 < c < shape[0]]
    region = tuple(
        tuple(sorted(draw(st.lists(st.integers(0, n), min_size=2, max_size=2)))) for n in shape
    )
    region = tuple((lo, hi if hi > lo else lo + 1) for lo, hi in region)
    region = tuple((min(lo, n - 1), min(hi, n)) for (lo, hi), n in zip(region, shape, strict=True))
    return shape, dtype, cuts, draw(st.integers(1, 4)), region, draw(st.integers(0, 2))


@CASES
@given(layouts())
def test_every_region_reads_back_exactly(tmp_path_factory, case):
    shape, dtype, cuts, slab_rows, region, halo = case
    folder = tmp_path_factory.mktemp("parts")
    rng = np.random.default_rng(7)
    data = (rng.random(shape) * 1000).astype(dtype)
    sources = write_parts(folder, data, cuts, slab_rows)
    want = data[tuple(slice(lo, hi) for lo, hi in region)]
    buffer = np.full(tuple(n + 2 * halo for n in want.shape), 99, dtype)
    out = buffer[tuple(slice(halo, halo + n) for n in want.shape)]  # strided when halo > 0
    read_region(folder / "out.h5", "u", PARTS, sources, region, out)
    np.testing.assert_array_equal(out, want)
    if halo:  # nothing written outside the result
        mask = np.ones(buffer.shape, bool)
        mask[tuple(slice(halo, halo + n) for n in want.shape)] = False
        assert (buffer[mask] == 99).all()


def big_part(folder: Path) -> tuple[np.ndarray, list, int, int]:
    """One part of 12 slabs of 4 rows (several MiB: the mapped, fused path)."""
    data = np.random.default_rng(3).random((48, 20000))
    sources = write_parts(folder, data, [], 4)
    with h5py.File(folder / PARTS / "rank-00000.h5", "r") as fh:
        offset = fh["u"].id.get_offset()
    return data, sources, offset, data.shape[1] * 8


def test_a_big_part_into_a_halo_buffer_is_the_data(tmp_path):
    data, sources, _, _ = big_part(tmp_path)
    buffer = np.zeros((50, 20002))
    read_region(tmp_path / "out.h5", "u", PARTS, sources, ((0, 48), (0, 20000)), buffer[1:-1, 1:-1])
    np.testing.assert_array_equal(buffer[1:-1, 1:-1], data)
    assert not buffer[0].any() and not buffer[:, 0].any() and not buffer[:, -1].any()


@pytest.mark.parametrize("slab", [0, 5, 11])
def test_a_flipped_byte_in_any_slab_is_refused(tmp_path, slab):
    data, sources, offset, row = big_part(tmp_path)
    part = tmp_path / PARTS / "rank-00000.h5"
    with open(part, "r+b") as fh:
        at = offset + slab * 4 * row + 12345
        fh.seek(at)
        byte = fh.read(1)
        fh.seek(at)
        fh.write(bytes([byte[0] ^ 0x10]))
    out = np.zeros(data.shape)
    with pytest.raises(HDF5Error, match=rf"slab {slab} of part rank-00000\.h5 fails its checksum"):
        read_region(tmp_path / "out.h5", "u", PARTS, sources, ((0, 48), (0, 20000)), out)


def test_a_truncated_part_is_refused(tmp_path):
    data, sources, offset, row = big_part(tmp_path)
    os.truncate(tmp_path / PARTS / "rank-00000.h5", offset + 30 * row)
    with pytest.raises(HDF5Error, match=r"rank-00000\.h5"):
        read_region(
            tmp_path / "out.h5", "u", PARTS, sources, ((0, 48), (0, 20000)), np.zeros(data.shape)
        )


@pytest.mark.parametrize("halo", [0, 1, 3])
def test_copy_checksum_is_a_copy_and_the_checksum(halo):
    src = np.random.default_rng(1).random((37, 101))
    buffer = np.zeros((37 + 2 * halo, 101 + 2 * halo))
    dst = buffer[halo : halo + 37, halo : halo + 101]
    assert copy_checksum(src, dst) == checksum(src)
    np.testing.assert_array_equal(dst, src)


@pytest.mark.parametrize("dtype", ["<f4", "<i2"])
def test_a_part_written_during_the_read_is_never_returned_under_the_old_sum(
    tmp_path, monkeypatch, dtype
):
    """Slabs the fused loop does not take are copied to private memory and summed there:
    a write to the part after the sum (another process editing it in place) cannot slip
    in under the checksum taken before it (it did: sum the shared pages, copy them again)."""
    import parcomp.io.parts as parts

    data = (np.arange(24 * 8) % 97).astype(dtype).reshape(24, 8)
    sources = write_parts(tmp_path, data, [], 4)
    part = tmp_path / PARTS / "rank-00000.h5"
    with h5py.File(part, "r") as fh:
        offset = fh["u"].id.get_offset()
    real = parts.checksum

    def racing(slab):
        digest = real(slab)
        fd = os.open(part, os.O_WRONLY)
        try:
            os.pwrite(fd, np.array([-7], dtype).tobytes(), offset)  # "another process"
        finally:
            os.close(fd)
        return digest

    monkeypatch.setattr(parts, "checksum", racing)
    out = np.zeros(data.shape, dtype)
    try:
        read_region(tmp_path / "out.h5", "u", PARTS, sources, ((0, 24), (0, 8)), out)
    except HDF5Error:
        return_value = "refused"
    else:
        return_value = "read"
    assert return_value == "refused" or np.array_equal(out, data)
    assert out[0, 0] != -7
