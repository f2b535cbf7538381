#!/usr/bin/env bash
# Installs mpi4py-fft 2.0.6 (the FFT peer library that bench/fft.py compares
# against, issue 15) into the project venv, built against the venv's own
# mpi4py/numpy and Debian's FFTW (libfftw3-dev).  OPTIONAL: only the benchmark
# needs it; the tests do not.
#
#   usage: bash bench/install_fft_peer.sh [VENV]      (default: <repo>/.venv)
#
# Notes: PyPI has only an sdist.  mpi4py-fft's extensions link FFTW only (no MPI),
# so the mpich wheel's MPI is untouched.  --no-build-isolation keeps pip from
# building numpy/mpi4py in a throwaway env; the constraints pin the venv's numpy
# and mpi4py so they cannot change.  wheel is needed because setuptools < 70.1
# (the venv has 65.5) has no bdist_wheel of its own.
set -euo pipefail

venv="${1:-$(cd "$(dirname "$0")/.." && pwd)/.venv}"
py="$venv/bin/python"

if "$py" -c 'import mpi4py_fft' 2>/dev/null; then
    echo "mpi4py-fft already importable in $venv: nothing to do"
    exit 0
fi
"$py" -c 'import mpi4py, numpy' || { echo "install mpi4py and numpy into $venv first" >&2; exit 1; }

if [ ! -e /usr/include/fftw3.h ]; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends libfftw3-dev
fi

constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
"$py" -m pip freeze | grep -Ei '^(numpy|mpi4py)==' > "$constraints"

"$py" -m pip install -c "$constraints" 'setuptools>=42' 'cython>=0.29.32' wheel
"$py" -m pip install -c "$constraints" --no-build-isolation mpi4py-fft==2.0.6
"$py" -c 'import mpi4py_fft, mpi4py_fft.fftw.fftw_xfftn; print("mpi4py-fft", mpi4py_fft.__version__, "OK")'
