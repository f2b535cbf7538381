"""Fletcher-64 slab checksums against a pure-Python reference: any dtype, shape and
layout (a block between halo columns is summed in place, without a copy)."""

import numpy as np
import pytest

from parcomp.io.slabs import checksum


def reference(a):
    raw = np.ascontiguousarray(a).reshape(-1).view(np.uint8).tobytes()
    raw += b"\0" * (-len(raw) % 8)
    s1 = s2 = 0
    for word in np.frombuffer(raw, np.uint64).tolist():
        s1 = (s1 + word) % 2**64
        s2 = (s2 + s1) % 2**64
    return f"fletcher64:{s1:016x}{s2:016x}"


@pytest.mark.parametrize("shape", [(5,), (3, 7), (4, 4, 3), (0,), (2, 0), (1, 1)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int16, np.uint8, np.complex128])
def test_matches_the_reference(shape, dtype):
    a = (np.random.default_rng(1).random(shape) * 1000).astype(dtype)
    assert checksum(a) == reference(a)


def test_strided_blocks_are_summed_in_place_with_the_same_result():
    a = np.random.default_rng(2).random((12, 14))
    for view in (a[1:-1, 2:-2], a[::2, 3:], a[:, :1], a[2:3, :]):
        assert checksum(view) == reference(view)
    assert checksum(a[1:-1, 2:-2]) != checksum(a[1:-1, 1:-3])  # a shifted block differs
