"""Task functions shared by the map/reduce benchmarks (importable by worker processes)."""

import time


def tiny(x):
    """The tiny task: x*x."""
    return x * x


def medium(x):
    """About 10 ms of CPU (a spin on the clock, so every peer does exactly the same work)."""
    end = time.perf_counter() + 0.010
    acc = 0
    while time.perf_counter() < end:
        acc += 1
    return x


def small(x):
    """About 50 us of CPU (a spin on the clock): a small but not trivial task."""
    end = time.perf_counter() + 0.000050
    while time.perf_counter() < end:
        pass
    return x
