"""The manifest parser under hostile input (hypothesis): a Manifest or a CheckpointSchemaError,
never another exception, and never a manifest whose placements disagree with its layout."""

import copy
import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from parcomp.checkpoint.manifest import Manifest, manifest_digest
from parcomp.checkpoint.writer import build_manifest
from parcomp.grid.partition import Partition
from parcomp.io.slabs import slab_bounds, slab_rows
from parcomp.runtime.errors import CheckpointSchemaError

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def synthetic(global_shape, nprocs, dtype="<f8", halo=1, periods=False, single=False, rng=None):
    """A manifest as the writer builds it for this layout (fake but well-formed checksums)."""
    part = Partition.create(global_shape, nprocs, periods=periods)
    halo = tuple(min(halo, n // d) for n, d in zip(part.global_shape, part.dims, strict=True))
    itemsize = np.dtype(dtype).itemsize
    shards, files = [], []
    for r in range(nprocs):
        rng_ = part.local_range(r)
        start = [a for a, _ in rng_]
        shape = [b - a for a, b in rng_]
        rows = slab_rows(shape, itemsize)
        n = len(slab_bounds(shape[0], rows))
        name = "master.h5" if single else f"shard-{r:05d}-of-{nprocs:05d}.h5"
        entry = {
            "rank": r,
            "file": name,
            "start": start,
            "shape": shape,
            "slab_rows": rows,
            "slab_checksums": [f"fletcher64:{(r * 31 + i):032x}" for i in range(n)],
        }
        if single:
            entry["file_start"] = list(start)
        shards.append(entry)
        if not single:
            files.append({"name": name, "bytes": math.prod(shape) * itemsize + 4096})
    files.append(
        {"name": "master.h5", "bytes": 8192 + (math.prod(global_shape) * itemsize if single else 0)}
    )
    arrays = {
        "u": {
            "global_shape": list(part.global_shape),
            "dtype": dtype,
            "dims": list(part.dims),
            "periods": list(part.periods),
            "halo": list(halo),
            "shards": shards,
        }
    }
    extra = {"layout": "single-file"} if single else {}
    if not single:  # per-rank data: rank r saved 2 r + 1 rows of 3 float64
        extra["local"] = {
            "p": {
                "dtype": "<f8",
                "tail": [3],
                "pieces": [
                    {
                        "rank": r,
                        "file": f"shard-{r:05d}-of-{nprocs:05d}.h5",
                        "length": 2 * r + 1,
                        "slab_rows": slab_rows((2 * r + 1, 3), 8),
                        "slab_checksums": [f"fletcher64:{r:032x}"],
                    }
                    for r in range(nprocs)
                ],
            }
        }
    state = np.random.Generator(np.random.PCG64(7)).bit_generator.state if rng else None
    return build_manifest(
        60,
        nprocs,
        arrays,
        files,
        {"t": 1.5, "nan": float("nan")},
        {"g": state} if rng else {},
        {},
        **extra,
    )


def raw(manifest):
    return json.dumps(manifest, indent=1, sort_keys=True).encode()


shapes = st.lists(st.integers(1, 40), min_size=1, max_size=3).map(tuple)


@FUZZ
@given(
    shapes,
    st.integers(1, 8),
    st.sampled_from(["<f8", "<f4", "<i4", "|u1", "<c16"]),
    st.booleans(),
    st.booleans(),
)
def test_writer_manifests_parse(global_shape, nprocs, dtype, periodic, single):
    try:
        m = synthetic(global_shape, nprocs, dtype, periods=periodic, single=single, rng=True)
    except Exception:  # noqa: BLE001 - a layout the writer itself could not have made
        return
    parsed = Manifest.parse(raw(m), "m", 60)
    assert parsed.step == 60 and parsed.nprocs == nprocs
    spec = parsed.arrays["u"]
    part = Partition(spec.global_shape, spec.dims, spec.periods)
    for shard in spec.shards:
        assert shard.start == tuple(a for a, _ in part.local_range(shard.rank))


# ----------------------------------------------------------------------------- mutations
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


def paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from paths(v, (*prefix, i))


def set_at(node, path, value):
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


def delete_at(node, path):
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]


BASE = synthetic((13, 11), 3, rng=True)
BASE_PATHS = [p for p in paths(BASE) if p and p[-1] != "manifest_sha256"]


def check_parsed(parsed):
    """What must hold for anything the parser accepts."""
    for spec in parsed.arrays.values():
        part = Partition(spec.global_shape, spec.dims, spec.periods)
        assert math.prod(spec.dims) == parsed.nprocs
        assert len(spec.shards) == parsed.nprocs
        covered = 0
        for shard in spec.shards:
            rng_ = part.local_range(shard.rank)
            assert shard.start == tuple(a for a, _ in rng_)
            assert shard.shape == tuple(b - a for a, b in rng_)
            covered += math.prod(shard.shape)
        assert covered == math.prod(spec.global_shape)  # blocks tile the array exactly
        assert spec.nbytes <= sum(parsed.files.values())


@FUZZ
@given(st.sampled_from(BASE_PATHS), json_values, st.sampled_from(["set", "delete"]))
def test_mutated_and_re_signed_manifest_is_refused_or_consistent(path, value, action):
    m = copy.deepcopy(BASE)
    try:
        if action == "set":
            set_at(m, path, value)
        else:
            delete_at(m, path)
    except (KeyError, IndexError, TypeError):
        return
    m["manifest_sha256"] = manifest_digest(m)  # an adversary who signs their edit
    try:
        parsed = Manifest.parse(raw(m), "m", 60)
    except CheckpointSchemaError:
        return
    check_parsed(parsed)


@FUZZ
@given(st.data())
def test_any_single_bit_flip_is_detected(data):
    text = raw(BASE)
    bit = data.draw(st.integers(0, len(text) * 8 - 1))
    flipped = bytearray(text)
    flipped[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(CheckpointSchemaError):
        Manifest.parse(bytes(flipped), "m", 60)


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes(blob):
    with pytest.raises(CheckpointSchemaError):
        Manifest.parse(blob, "m", None)


@FUZZ
@given(st.integers(0, len(raw(BASE))), st.binary(min_size=1, max_size=8))
def test_truncated_or_spliced(cut, junk):
    text = raw(BASE)
    blob = text[:cut] + junk
    try:  # the whole manifest plus whitespace, or a cut brace put back, is not damaged
        intact = json.loads(blob) == json.loads(text)
    except ValueError:
        intact = False
    assume(not intact)
    with pytest.raises(CheckpointSchemaError):
        Manifest.parse(blob, "m", 60)


# ----------------------------------------------------------------------------- named cases
def signed(mutate):
    m = copy.deepcopy(BASE)
    mutate(m)
    m["manifest_sha256"] = manifest_digest(m)
    return raw(m)


def shards(m):
    return m["arrays"]["u"]["shards"]


NAMED = {
    # the campaign's silent-wrong-data and crash cases, each re-signed by the "attacker"
    "step 59": lambda m: m.update(step=59),
    "step -5": lambda m: m.update(step=-5),
    "step 1e9 float": lambda m: m.update(step=1e9),
    "step true": lambda m: m.update(step=True),
    "step '60'": lambda m: m.update(step="60"),
    "step null": lambda m: m.update(step=None),
    "starts swapped": lambda m: (
        lambda s: (s[0].update(start=s[1]["start"]), s[1].update(start=[0, 0]))
    )(shards(m)),
    "start shifted 214->215": lambda m: shards(m)[1]["start"].__setitem__(
        0, shards(m)[1]["start"][0] + 1
    ),
    "shard removed": lambda m: shards(m).pop(),
    "shards {}": lambda m: m["arrays"]["u"].update(shards={}),
    "shards a string": lambda m: m["arrays"]["u"].update(shards="shard-0"),
    "shards integers": lambda m: m["arrays"]["u"].update(shards=[1, 2, 3]),
    "negative shape": lambda m: shards(m)[0]["shape"].__setitem__(0, -4),
    "slab_rows -1": lambda m: shards(m)[0].update(slab_rows=-1),
    "slab_rows 1": lambda m: shards(m)[0].update(slab_rows=1),
    "slab_rows 50": lambda m: shards(m)[0].update(slab_rows=50),
    "halo too wide": lambda m: m["arrays"]["u"].update(halo=[5, 5]),
    # (a re-signed halo or periods that still fits is caught against the shard's own
    # attributes at read time: tests/system/test_manifest_mutations.py)
    "arrays []": lambda m: m.update(arrays=[]),
    "arrays.u []": lambda m: m["arrays"].update(u=[]),
    "files 5": lambda m: m.update(files=5),
    "dtype object": lambda m: m["arrays"]["u"].update(dtype="|O"),
    "dtype changed <f4": lambda m: m["arrays"]["u"].update(dtype="<f4"),
    "nprocs 4": lambda m: m.update(nprocs=4),
    "huge global_shape": lambda m: m["arrays"]["u"].update(global_shape=[1000000, 320]),
    "rng seed": lambda m: m["rng"].update(g={"bit_generator": "seed"}),
    "file ../x": lambda m: shards(m)[0].update(file="../x.h5"),
    "file absolute": lambda m: m["files"][0].update(name="/etc/passwd"),
    "local piece length huge": lambda m: m["local"]["p"]["pieces"][0].update(length=10**12),
    "local piece missing": lambda m: m["local"]["p"]["pieces"].pop(),
    "local piece file outside": lambda m: m["local"]["p"]["pieces"][1].update(file="../x.h5"),
    "local dtype object": lambda m: m["local"]["p"].update(dtype="|O"),
    "local slab_rows 0": lambda m: m["local"]["p"]["pieces"][0].update(slab_rows=0),
}


@pytest.mark.parametrize("name", sorted(NAMED))
def test_campaign_mutations_are_refused(name):
    with pytest.raises(CheckpointSchemaError):
        Manifest.parse(signed(NAMED[name]), "m", 60)


def test_deep_nesting_is_a_schema_error():
    deep = b"[" * 100000 + b"]" * 100000
    with pytest.raises(CheckpointSchemaError):
        Manifest.parse(deep, "m", None)
    m = copy.deepcopy(BASE)
    nested: list = []
    for _ in range(200):
        nested = [nested]
    m["meta"]["x"] = nested
    m["manifest_sha256"] = manifest_digest(m)
    with pytest.raises(CheckpointSchemaError, match="nested"):
        Manifest.parse(raw(m), "m", 60)


def test_duplicate_keys_refused():
    text = raw(BASE).replace(b'"step": 60', b'"step": 60, "step": 61')
    with pytest.raises(CheckpointSchemaError, match="duplicate key"):
        Manifest.parse(text, "m", 60)


def test_nan_scalars_survive():
    parsed = Manifest.parse(raw(BASE), "m", 60)
    assert parsed.scalars["t"] == 1.5 and math.isnan(parsed.scalars["nan"])
