"""Exact sums (parcomp.runtime.exactsum) against Python's exact rational arithmetic."""

from fractions import Fraction

import numpy as np
import pytest

from parcomp.runtime.exactsum import exact_sum

RNG = np.random.default_rng(0)


def reference(values):
    total = sum(Fraction(float(x)) for x in np.asarray(values).reshape(-1))
    try:
        return float(total)
    except OverflowError:
        return float("inf") if total > 0 else float("-inf")


@pytest.mark.parametrize(
    "values",
    [
        RNG.random(1000),
        RNG.standard_normal(1000) * 1e300,
        np.array([1e308, 1e308, -1e308]),  # NumPy's sum overflows; the exact sum does not
        np.array([5e-324, 5e-324, -1e-320, 3.0]),  # subnormals
        np.array([1.0, 1e-16, 1e-16]),  # NumPy's sum loses both small terms
        RNG.standard_normal(500) * np.exp(RNG.uniform(-700, 700, 500)),
        np.array([0.0, -0.0]),
        np.array([2.0**1023, 2.0**1023]),  # overflows after rounding
        RNG.standard_normal((7, 9))[:, ::2],  # strided
    ],
    ids=["uniform", "huge", "cancel", "subnormal", "tiny", "wide", "zeros", "overflow", "strided"],
)
def test_correctly_rounded_whatever_the_order(values):
    want = reference(values)
    assert exact_sum(values) == want
    flat = np.asarray(values).reshape(-1)
    assert exact_sum(flat[::-1]) == want
    assert exact_sum(RNG.permutation(flat)) == want


def test_non_finite_values_give_what_numpy_gives():
    assert np.isnan(exact_sum(np.array([np.nan, 1.0])))
    assert exact_sum(np.array([np.inf, 1.0])) == np.inf
    assert np.isnan(exact_sum(np.array([np.inf, -np.inf])))
