import pytest

import parcomp
from parcomp.runtime import errors


@pytest.mark.parametrize(
    ("cls", "builtin"),
    [
        (errors.ConfigError, ValueError),
        (errors.ShapeError, ValueError),
        (errors.DTypeError, TypeError),
        (errors.KernelSignatureError, TypeError),
        (errors.RankCountError, ValueError),
        (errors.CollectiveError, RuntimeError),
        (errors.LaunchError, OSError),
        (errors.MPIExecNotFoundError, FileNotFoundError),
        (errors.CheckpointError, OSError),
        (errors.CheckpointSchemaError, ValueError),
    ],
)
def test_hierarchy(cls, builtin):
    assert issubclass(cls, errors.ParcompError)
    assert issubclass(cls, builtin)
    assert getattr(parcomp, cls.__name__) is cls


def test_all_is_explicit_and_importable():
    for name in parcomp.__all__:
        assert getattr(parcomp, name) is not None
    assert "jit" in dir(parcomp)


def test_import_does_not_start_mpi():
    import subprocess
    import sys

    code = "import sys, parcomp; print('mpi4py.MPI' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
