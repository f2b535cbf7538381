"""parcomp's output files under hostile metadata (hypothesis), as the manifest is fuzzed:
the virtual dataset's mapping, the ``parts`` attribute and every part's placement and
checksum attributes are mutated; reading gives back exactly the data written or an
HDF5Error, never another exception and never other values."""

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parcomp.io.parts import check_output_sources, read_region
from parcomp.io.slabs import checksum, slab_bounds
from parcomp.runtime.errors import HDF5Error

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
SHAPE = (6, 5)
PARTS = "field.h5.parts-0123456789ab"
DATA = np.arange(30, dtype=np.float64).reshape(SHAPE) * 1.5
BLOCKS = [((0, 0), (3, 5)), ((3, 0), (3, 5))]  # two ranks, rows split


def write(folder: Path, slab_rows: int = 2) -> Path:
    """The layout save_hdf5 writes with serial h5py, made by hand (no MPI)."""
    (folder / PARTS).mkdir()
    for r, (start, shape) in enumerate(BLOCKS):
        block = DATA[start[0] : start[0] + shape[0]]
        with h5py.File(folder / PARTS / f"rank-{r:05d}.h5", "w") as fh:
            fh.attrs.update({"creator": "parcomp", "rank": r, "nprocs": 2})
            d = fh.create_dataset("u", data=block)
            d.attrs.update(
                {
                    "global_start": list(start),
                    "global_shape": list(SHAPE),
                    "rank": r,
                    "nprocs": 2,
                    "dims": [2, 1],
                    "slab_rows": slab_rows,
                    "slab_checksums": np.array(
                        [checksum(block[a:b]) for a, b in slab_bounds(shape[0], slab_rows)], "S"
                    ),
                }
            )
    path = folder / "field.h5"
    with h5py.File(path, "w") as fh:
        fh.attrs.update({"creator": "parcomp", "parts": PARTS})
        mapping(fh, [(f"./{PARTS}/rank-{r:05d}.h5", "u", s, e) for r, (s, e) in enumerate(BLOCKS)])
    return path


def mapping(fh, sources) -> None:
    layout = h5py.VirtualLayout(shape=SHAPE, dtype=np.float64)
    for name, dset, start, extent in sources:
        src = h5py.VirtualSource(name, dset, shape=tuple(extent))
        layout[tuple(slice(a, a + e) for a, e in zip(start, extent, strict=True))] = src
    fh.create_virtual_dataset("u", layout)


def read(path: Path) -> np.ndarray:
    """What load_hdf5 does on one rank for the whole array."""
    with h5py.File(path, "r") as fh:
        parts = fh.attrs["parts"]
        sources = check_output_sources(path, "u", fh["u"], parts)
    out = np.zeros(SHAPE)
    read_region(path, "u", parts, sources, ((0, SHAPE[0]), (0, SHAPE[1])), out)
    return out


def outcome(path: Path) -> str:
    try:
        got = read(path)
    except HDF5Error:
        return "refused"
    assert np.array_equal(got, DATA), "other data returned with success"
    return "read"


@pytest.fixture
def folder(tmp_path):
    return tmp_path


def test_the_clean_layout_reads_back(folder):
    assert np.array_equal(read(write(folder)), DATA)


NAMES = st.sampled_from(
    [
        f"./{PARTS}/rank-00000.h5",
        f"./{PARTS}/rank-00001.h5",
        f"./{PARTS}/rank-00002.h5",
        f"{PARTS}/rank-00000.h5",
        f"./{PARTS}/../{PARTS}/rank-00000.h5",
        "/etc/hostname",
        "../field.h5",
        "./other.parts-1/rank-00000.h5",
        ".",
    ]
) | st.text(max_size=30)
EXTENTS = st.tuples(st.integers(0, 6), st.integers(0, 5))


@FUZZ
@given(
    sources=st.lists(
        st.tuples(NAMES, st.sampled_from(["u", "/u", "v", "u/x"]), EXTENTS, EXTENTS),
        min_size=1,
        max_size=3,
    )
)
def test_hostile_virtual_mappings(tmp_path_factory, sources):
    folder = tmp_path_factory.mktemp("vds")
    path = write(folder)
    usable = [
        (n, d, s, e)
        for n, d, s, e in sources
        if all(x >= 1 for x in e) and all(a + b <= m for a, b, m in zip(s, e, SHAPE, strict=True))
    ]
    if not usable:
        return
    with h5py.File(path, "a") as fh:
        del fh["u"]
        try:
            mapping(fh, usable)
        except (ValueError, TypeError, OSError, RuntimeError):
            return  # h5py would not store it: nothing to read
    assert outcome(path) in ("read", "refused")
    shutil.rmtree(folder)


ATTR_VALUES = (
    st.integers(-3, 10)
    | st.lists(st.integers(-3, 10), max_size=3)
    | st.text(max_size=10)
    | st.just(np.array([b"fletcher64:" + b"0" * 32], "S"))
)


@FUZZ
@given(
    rank=st.integers(0, 1),
    key=st.sampled_from(["global_start", "rank", "slab_rows", "slab_checksums", "global_shape"]),
    value=ATTR_VALUES,
)
def test_hostile_part_attributes(tmp_path_factory, rank, key, value):
    folder = tmp_path_factory.mktemp("attrs")
    path = write(folder)
    with h5py.File(folder / PARTS / f"rank-{rank:05d}.h5", "a") as fh:
        try:
            fh["u"].attrs[key] = value
        except (TypeError, ValueError):
            return
    assert outcome(path) in ("read", "refused")
    shutil.rmtree(folder)


@FUZZ
@given(parts=NAMES | st.binary(max_size=20))
def test_hostile_parts_attribute(tmp_path_factory, parts):
    folder = tmp_path_factory.mktemp("parts")
    path = write(folder)
    with h5py.File(path, "a") as fh:
        try:
            fh.attrs["parts"] = parts
        except (TypeError, ValueError):
            return
    assert outcome(path) in ("read", "refused")
    shutil.rmtree(folder)
