#!/usr/bin/env bash
# Build the "site MPI" venv used by the mpio (parallel HDF5) checkpoint tests:
# Debian's MPICH + parallel HDF5, and mpi4py + h5py compiled against them, as a user on a
# cluster would (`module load mpich hdf5-parallel`).  Usage: mpio_venv.sh VENV
set -euo pipefail
venv=${1:?usage: mpio_venv.sh VENV}
arch=$(gcc -print-multiarch)
hdf5=/usr/lib/$arch/hdf5/mpich
if ! command -v mpicc.mpich >/dev/null || [ ! -e "$hdf5/libhdf5.so" ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "mpio_venv.sh: needs Debian's libhdf5-mpich-dev (apt-get install libhdf5-mpich-dev) -- run as root or install it" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libhdf5-mpich-dev >/dev/null
fi
python3 -m venv "$venv"
pip=("$venv/bin/python" -m pip -q --disable-pip-version-check)
"${pip[@]}" install --upgrade pip
"${pip[@]}" install --upgrade "numpy>=1.26" "cython>=3" pkgconfig "setuptools>=77" wheel
# mpi4py and h5py from source, against the site MPI and its parallel HDF5
MPICC=mpicc.mpich "${pip[@]}" install --no-binary=mpi4py --no-cache-dir mpi4py
CC=mpicc.mpich HDF5_MPI=ON HDF5_DIR="$hdf5" \
  "${pip[@]}" install --no-binary=h5py --no-build-isolation --no-cache-dir h5py
"${pip[@]}" install -e ".[jobs,test]"
"$venv/bin/python" - <<'PY'
import h5py
from mpi4py import MPI
assert h5py.get_config().mpi, "h5py was built without MPI"
print("mpio venv:", MPI.Get_library_version().splitlines()[0], "| h5py", h5py.__version__,
      "| HDF5", h5py.version.hdf5_version, "| mpi:", h5py.get_config().mpi)
PY
touch "$venv/.parcomp-installed"
