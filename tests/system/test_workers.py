"""parcomp.Workers: MPI ranks spawned from a plain Python process (as a notebook kernel is)."""

import textwrap

from tests.conftest import BIN, run

PY = BIN / "python"


def script(body):
    return [PY, "-c", textwrap.dedent(body)]


def test_workers_compute_report_errors_and_survive_timeouts():
    out = run(
        script("""
        import time
        import numpy as np
        import parcomp
        from parcomp.front.workers import WorkerError, Workers

        with Workers(3) as w:
            assert w.map(lambda x: x * x, range(20)) == [x * x for x in range(20)]
            total = w.map_reduce(lambda i: 1.0 / (1 + i), range(5000), deterministic=True)
            assert abs(total - sum(1.0 / (1 + i) for i in range(5000))) < 1e-9
            assert w.run(lambda: (parcomp.rank(), parcomp.size())) == [(0, 3), (1, 3), (2, 3)]
            big = w.run(lambda: np.arange(200_000.0) * parcomp.rank())  # 1.6 MB replies
            assert [float(b[-1]) for b in big] == [0.0, 199999.0, 399998.0]
            try:
                w.run(lambda: 1 / (parcomp.rank() - 2))
            except WorkerError as exc:
                assert exc.rank == 2 and "ZeroDivisionError" in str(exc) and "Traceback" in exc.remote_traceback
                print("error named rank", exc.rank)
            t0 = time.monotonic()
            try:
                w.run(lambda: time.sleep(60), timeout=1.0)
            except TimeoutError as exc:
                print("timeout after", round(time.monotonic() - t0, 1), "s:", exc)
            assert w.run(lambda: "usable") == ["usable"] * 3
        print("done")
    """),
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert (
        "error named rank 2" in out.stdout
        and "workers [0, 1, 2] did not finish within 1 s" in out.stdout
    )
    assert out.stdout.rstrip().endswith("done")


def test_foreign_mpiexec_is_refused_quickly(tmp_path):
    fake = tmp_path / "mpiexec"
    fake.write_text("#!/bin/sh\necho 'mpiexec (Open MPI) 4.1.4'\n")
    fake.chmod(0o755)
    out = run(
        script("""
        from parcomp.front.workers import Workers
        Workers(2, start_timeout=10)
    """),
        timeout=60,
        env={"PARCOMP_MPIEXEC": str(fake)},
    )
    assert out.returncode != 0
    assert (
        "LaunchError" in out.stderr and "mpiexec is Open MPI but mpi4py loaded MPICH" in out.stderr
    )


def test_forgotten_workers_do_not_hang_exit():
    out = run(
        script("""
        from parcomp.front.workers import Workers
        w = Workers(2)
        print(w.run(lambda: 7))
    """),
        timeout=60,
    )
    assert out.returncode == 0 and "[7, 7]" in out.stdout


def test_an_interrupted_map_resumes_on_the_next_identical_call(tmp_path):
    """A notebook's map with checkpoint= stopped by a timeout (SIGINT to the busy
    workers, as the stop button) goes on from its last commit at the next same call."""
    out = run(
        script(f"""
        import time
        from parcomp.front.workers import Workers

        side = {str(tmp_path)!r}

        def slow(x):
            with open(side + "/calls", "a") as fh:
                fh.write(f"{{x}}\\n")
            time.sleep(0.02)
            return x * x

        with Workers(2) as w:
            try:
                w.map(slow, range(200), checkpoint=side + "/progress", every_items=10, timeout=1.5)
            except TimeoutError:
                print("interrupted after", len(open(side + "/calls").read().split()), "calls")
            got = w.map(slow, range(200), checkpoint=side + "/progress", every_items=10)
            assert got == [x * x for x in range(200)]
        calls = [int(v) for v in open(side + "/calls").read().split()]
        again = len(calls) - len(set(calls))
        assert set(calls) == set(range(200)) and again <= 10, again
        print("resumed, items run twice:", again)
    """),
        timeout=150,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "interrupted after" in out.stdout and "resumed, items run twice:" in out.stdout
