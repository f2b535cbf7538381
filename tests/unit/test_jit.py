"""@parcomp.jit in one process: options, cache safety, NUMBA_DISABLE_JIT, errors."""

import os
import subprocess
import sys

import numpy as np
import pytest

import parcomp
from parcomp.runtime.errors import ConfigError, KernelSignatureError
from parcomp.runtime.kernel_cache import ensure_safe_dir
from parcomp.runtime.numba_jit import Kernel


@parcomp.jit(boundscheck=True, cache=False)
def _index(a, i):
    return a[i]


def test_options_pass_through():
    assert isinstance(_index, Kernel)
    assert _index.options == {"boundscheck": True, "cache": False}
    assert _index(np.arange(3.0), 1) == 1.0
    with pytest.raises(IndexError):
        _index(np.arange(3.0), 7)  # boundscheck=True reached numba


def test_typing_error_is_kernel_signature_error():
    with pytest.raises(
        KernelSignatureError, match="kernel '_index' does not compile for the arguments given"
    ):
        _index(np.arange(3.0), "x")


def test_not_a_function():
    with pytest.raises(KernelSignatureError, match="needs a function"):
        parcomp.jit(3)


def test_unsafe_cache_dirs_are_refused(tmp_path):
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    with pytest.raises(ConfigError, match="writable by others"):
        ensure_safe_dir(open_dir)
    new = ensure_safe_dir(tmp_path / "a" / "b")
    assert new.stat().st_mode & 0o777 == 0o700
    if os.getuid() == 0:
        other = tmp_path / "other"
        other.mkdir(mode=0o755)
        os.chown(other, 12345, 12345)
        with pytest.raises(ConfigError, match="belongs to uid 12345"):
            ensure_safe_dir(other)


def test_disable_jit_runs_python(tmp_path):
    code = (
        "import numpy as np, parcomp\n"
        "from parcomp.kernels import heat_step_2d, heat_step_2d_numpy\n"
        "u = np.random.default_rng(0).random((9, 8)); a = np.zeros_like(u); b = np.zeros_like(u)\n"
        "heat_step_2d(u, a, 0.2); heat_step_2d_numpy(u, b, 0.2)\n"
        "print(bool((a == b).all()), heat_step_2d._dispatcher is None)\n"
    )
    env = dict(os.environ, NUMBA_DISABLE_JIT="1", NUMBA_CACHE_DIR=str(tmp_path / "c"))
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True"]  # same numbers, and numba never compiled it
    assert not (tmp_path / "c").exists()


def test_exec_defined_function_falls_back_to_no_cache():
    namespace = {}
    exec("def f(x):\n    return x + 1\n", namespace)
    k = parcomp.jit(namespace["f"])
    assert k(1) == 2
    assert k.options["cache"] is False


def test_a_kernel_calls_another_kernel(tmp_path, monkeypatch):
    # was: "Untyped global name 'helper': Cannot determine Numba type of Kernel"
    import numpy as np

    import parcomp

    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))

    @parcomp.jit
    def helper(x, y):
        return 0.5 * (x + y)

    @parcomp.jit(cache=False)
    def outer(u, out):
        for i in range(1, u.shape[0] - 1):
            out[i] = helper(u[i - 1], u[i + 1])

    u = np.arange(6.0) ** 2
    out = np.zeros(6)
    outer(u, out)
    assert np.array_equal(out[1:-1], 0.5 * (u[:-2] + u[2:]))
