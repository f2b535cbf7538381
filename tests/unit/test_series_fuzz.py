"""The Series bookkeeping parser under hostile input (hypothesis): a clean result or a
ValueError/TypeError/KeyError (which the reader turns into HDF5Error), never another
exception, and never a result with segments outside the shape or not adding up."""

import copy
import json

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parcomp.io.series_meta import parse_meta

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NAME = "run.h5"


def valid(records=4, nprocs=2, shape=(8, 6)):
    half = shape[0] // 2
    ranges = [[[0, half], [0, shape[1]]], [[half, shape[0]], [0, shape[1]]]][:nprocs]
    meta = {
        "identity": {
            "fields": {"u": ["<f8", list(shape)]},
            "dims": ["x", "y"],
            "scalars": ["e"],
            "coords_sha256": "0" * 64,
        },
        "segments": [
            {"parts": f"{NAME}.parts-0123456789ab", "nprocs": nprocs, "ranges": ranges,
             "first": 0, "count": records},
        ],
    }  # fmt: skip
    steps = np.arange(records) * 10
    columns = {"step": steps, "time": steps * 0.5, "e": np.ones(records)}
    return meta, columns


def test_the_valid_bookkeeping_parses():
    meta, columns = valid()
    out = parse_meta(NAME, meta, columns)
    assert out["steps"] == [0, 10, 20, 30] and out["segments"][0]["count"] == 4


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)

PATHS = [
    ("identity",), ("identity", "fields"), ("identity", "fields", "u"), ("identity", "fields", "u", 0),
    ("identity", "fields", "u", 1), ("identity", "fields", "u", 1, 0), ("identity", "dims"),
    ("identity", "scalars"), ("identity", "coords_sha256"), ("segments",), ("segments", 0),
    ("segments", 0, "parts"), ("segments", 0, "nprocs"), ("segments", 0, "first"),
    ("segments", 0, "count"), ("segments", 0, "ranges"), ("segments", 0, "ranges", 0),
    ("segments", 0, "ranges", 1, 0), ("segments", 0, "ranges", 1, 0, 1),
]  # fmt: skip


def mutate(meta, path, value):
    node = meta
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


@FUZZ
@given(st.sampled_from(PATHS), JSONISH, st.integers(0, 6), st.sampled_from(["step", "time", "e"]))
def test_hostile_bookkeeping_is_refused_cleanly(path, value, cut, column):
    meta, columns = valid()
    meta = copy.deepcopy(meta)
    mutate(meta, path, value)
    meta = json.loads(json.dumps(meta))  # what a file can hold
    columns = dict(columns)
    columns[column] = columns[column][:cut]
    try:
        out = parse_meta(NAME, meta, columns)
    except (ValueError, TypeError, KeyError):
        return
    # accepted: then it is consistent
    shape = next(iter(out["identity"]["fields"].values()))[1]
    assert sum(s["count"] for s in out["segments"]) == len(out["steps"]) == len(out["times"])
    for seg in out["segments"]:
        assert len(seg["ranges"]) == seg["nprocs"]
        for block in seg["ranges"]:
            assert all(0 <= lo <= hi <= n for (lo, hi), n in zip(block, shape, strict=True))
    assert all(b > a for a, b in zip(out["steps"], out["steps"][1:], strict=False))
