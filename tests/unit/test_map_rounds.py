"""The pure parts of resumable maps: framed records, item ranges, the commit cadence.
Committed records are hostile until checked: every damaged frame or range is a
CheckpointSchemaError, never another exception or a wrong record."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parcomp.mapreduce.records import frame, frame_blobs, intervals, mark, unframe, unframe_blobs
from parcomp.mapreduce.resume import _Cadence, check_cadence
from parcomp.runtime.errors import CheckpointSchemaError, ConfigError


@given(st.dictionaries(st.integers(0, 10**6), st.binary(max_size=40), max_size=30))
def test_frames_round_trip(blobs):
    assert unframe_blobs(frame_blobs(blobs), "here") == blobs


@settings(max_examples=300)
@given(st.dictionaries(st.integers(0, 50), st.integers(), min_size=1, max_size=8), st.data())
def test_damaged_frames_are_schema_errors_or_other_valid_records(records, data):
    raw = bytearray(frame(records).tobytes())
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    try:
        got = unframe(np.frombuffer(bytes(raw[:cut]), np.uint8), 51, "here")
    except CheckpointSchemaError:
        return
    assert all(0 <= k < 51 for k in got)


def test_keys_out_of_range_or_repeated_are_refused():
    good = frame({3: "x"})
    with pytest.raises(CheckpointSchemaError, match="out of range"):
        unframe(good, 3, "here")
    twice = np.concatenate([good, good])
    with pytest.raises(CheckpointSchemaError, match="repeated"):
        unframe_blobs(twice, "here")


@given(st.lists(st.booleans(), max_size=60))
def test_intervals_cover_exactly_the_true_items(flags):
    mask = np.array(flags, bool)
    again = np.zeros(len(mask), bool)
    mark(again, intervals(mask), "here")
    assert np.array_equal(mask, again)


@pytest.mark.parametrize(
    "ranges", ["x", [(0, 5, 1)], [(3, 2)], [(-1, 2)], [(0, 11)], [(0.0, 2)], [(True, 2)], [[0, 2]]]
)
def test_hostile_ranges_are_refused(ranges):
    with pytest.raises(CheckpointSchemaError):
        mark(np.zeros(10, bool), ranges, "here")


def test_cadence_by_items_commits_every_round():
    c = _Cadence(4, 1000, None, 2)
    assert c.units == 250 and c.due(0.0, False)
    c.next(250, 9.0)
    assert c.units == 250


def test_cadence_by_seconds_probes_then_sizes_rounds_and_commits_when_due():
    c = _Cadence(1, None, 2.0, 3)
    assert c.units == 3  # one unit per rank measures the rate
    c.next(3, 0.03)  # 100 units/s
    assert c.units == 200
    assert not c.due(1.7, False) and c.due(1.85, False) and c.due(0.1, True)
    both = _Cadence(1, 50, 2.0, 3)
    both.next(3, 0.03)
    assert both.units == 50 and both.due(0.0, False)  # every_items caps and commits


@pytest.mark.parametrize(
    "args",
    [
        (0, None),
        (1.5, None),
        (True, None),
        (None, 0),
        (None, -2),
        (None, float("inf")),
        (None, "1"),
    ],
)
def test_bad_cadences_are_config_errors(args):
    with pytest.raises(ConfigError):
        check_cadence(*args, "block", "yes")


def test_default_cadence_is_a_thousand_items():
    assert check_cadence(None, None, "dynamic", "ignore") == (1000, None)
    with pytest.raises(ConfigError, match="schedule"):
        check_cadence(None, None, "greedy", "yes")
