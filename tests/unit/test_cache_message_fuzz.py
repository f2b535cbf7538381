"""The kernel-cache message that rank 0 broadcasts (parcomp.runtime.numba_jit.pack_cache_files/unpack_cache_files):
round trips, and hostile or damaged buffers give a ConfigError, never a crash or a file
outside the cache."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parcomp.runtime.errors import ConfigError
from parcomp.runtime.kernel_cache import CACHE_FILE_NAME, pack_cache_files, unpack_cache_files

names = st.from_regex(r"[a-z_]{1,12}-[0-9]{1,3}\.py311(\.nbi|\.[0-9]{1,3}\.nbc)", fullmatch=True)
files = st.lists(st.tuples(names, st.binary(max_size=200)), max_size=5)


@given(files)
@settings(max_examples=100, deadline=None)
def test_round_trip(items):
    assert unpack_cache_files(pack_cache_files(items)) == items


@given(st.binary(max_size=300))
@settings(max_examples=150, deadline=None)
def test_random_bytes_never_crash(blob):
    try:
        out = unpack_cache_files(blob)
    except ConfigError:
        return
    assert isinstance(out, list)  # a blob that happens to parse gives (name, bytes) pairs
    assert all(isinstance(n, str) and isinstance(d, bytes) for n, d in out)


@given(files, st.integers(min_value=0, max_value=400))
@settings(max_examples=100, deadline=None)
def test_truncated_messages_are_refused(items, cut):
    blob = pack_cache_files(items)
    if cut >= len(blob):
        return
    try:
        out = unpack_cache_files(blob[:cut])
    except ConfigError:
        return
    # a cut that still parses can only be one that dropped whole empty files at the end
    assert sum(len(d) for _, d in out) <= sum(len(d) for _, d in items)


@pytest.mark.parametrize(
    "header",
    [
        [["x.nbi", -1]],
        [["x.nbi", "7"]],
        [[7, 3]],
        [["x.nbi", 10**9]],
    ],
)
def test_malformed_headers(header):
    text = json.dumps(header).encode()
    with pytest.raises(ConfigError):
        unpack_cache_files(len(text).to_bytes(8, "little") + text + b"abc")


@pytest.mark.parametrize(
    "name", ["../evil.nbi", "/etc/passwd", "a/b.nbi", "x.nbi/..", "x.py", ".nbi", "x.1.nbc\n"]
)
def test_file_names_that_could_leave_the_cache_are_refused(name):
    assert not CACHE_FILE_NAME.fullmatch(name)
