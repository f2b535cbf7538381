"""Resumable maps (``checkpoint=``): ``map``, ``map_reduce`` and ``map_reduce_keyed``
interrupted by a failing item and rerun resume from their last commit, on every schedule,
compute every item once plus at most the round in flight, give the uninterrupted answer
(``deterministic=True`` bitwise), and refuse progress that is not theirs."""

import collections
import math
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
from mpi4py import MPI

import parcomp
from parcomp.runtime.errors import CheckpointError, CheckpointSchemaError, ConfigError, TaskError
from parcomp.testing import parallel_assert

COMM = MPI.COMM_WORLD
RANK, SIZE = COMM.rank, COMM.size
SCHEDULES = ["block", "cyclic", "dynamic"]


def folder(factory, name):
    return Path(COMM.bcast(str(factory.mktemp(name)) if RANK == 0 else None))


class Counted:
    """A mapper that writes each call to a side file and fails at one item when told."""

    def __init__(self, where: Path, value=None):
        self.where = where
        self.value = value or (lambda x: {"x": x, "square": x * x})

    def __call__(self, x):
        with open(self.where / f"calls-{RANK}", "a") as fh:
            fh.write(f"{x}\n")
        stop = self.where / "fail-at"
        if stop.exists() and int(stop.read_text()) == x:
            raise RuntimeError(f"failing at {x}")
        return self.value(x)


def calls(where: Path) -> list[int]:
    out = []
    for f in where.glob("calls-*"):
        out += [int(v) for v in f.read_text().split()]
    return out


def fail_at(where: Path, item: int | None) -> None:
    COMM.Barrier()
    if RANK == 0:
        if item is None:
            (where / "fail-at").unlink()
        else:
            (where / "fail-at").write_text(str(item))
    COMM.Barrier()


def twice(where: Path) -> set[int]:
    ran = calls(where)
    return {x for x in ran if ran.count(x) > 1}


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_a_failed_map_resumes_where_it_stopped(tmp_path_factory, schedule):
    where = folder(tmp_path_factory, "resume")
    fail_at(where, 37)
    mapper = Counted(where)
    with pytest.raises(TaskError, match="failing at 37"):
        parcomp.map(mapper, range(80), checkpoint=where / "p", every_items=10, schedule=schedule)
    fail_at(where, None)
    out = parcomp.map(mapper, range(80), checkpoint=where / "p", every_items=10, schedule=schedule)
    COMM.Barrier()
    parallel_assert(
        out == [{"x": x, "square": x * x} for x in range(80)]
        and set(calls(where)) == set(range(80))
        and twice(where) <= set(range(30, 40)),  # only the round in flight at the failure
        (sorted(twice(where)), len(calls(where))),
    )


def leafy(x):
    return 1.0 / (1.0 + x) ** 1.5


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_deterministic_map_reduce_resumes_to_the_uninterrupted_bits(tmp_path_factory, schedule):
    where = folder(tmp_path_factory, "det")
    n = 3000
    plain = parcomp.map_reduce(leafy, range(n), "sum", deterministic=True)
    mapper = Counted(where, leafy)
    fail_at(where, 2222)
    with pytest.raises(TaskError, match="failing at 2222"):
        parcomp.map_reduce(
            mapper, range(n), "sum", deterministic=True, checkpoint=where / "p", every_items=500,
            schedule=schedule,
        )  # fmt: skip
    fail_at(where, None)
    got = parcomp.map_reduce(
        mapper, range(n), "sum", deterministic=True, checkpoint=where / "p", every_items=500,
        schedule=schedule,
    )  # fmt: skip
    COMM.Barrier()
    exact = math.fsum(leafy(x) for x in range(n))
    parallel_assert(
        got.hex() == plain.hex()
        and abs(got - exact) < 1e-12 * exact
        and set(calls(where)) == set(range(n))
        and len(twice(where)) <= 500 + 16,  # a round of leaves (16-item leaves here)
        (got.hex(), plain.hex(), len(twice(where))),
    )


def vector(x):
    return np.array([x, x * x, 1], dtype=np.int64)


def test_map_reduce_resumes_its_partials(tmp_path_factory):
    where = folder(tmp_path_factory, "fold")
    mapper = Counted(where, vector)
    fail_at(where, 151)
    with pytest.raises(TaskError, match="failing at 151"):
        parcomp.map_reduce(mapper, range(200), "sum", checkpoint=where / "p", every_items=40)
    fail_at(where, None)
    got = parcomp.map_reduce(mapper, range(200), "sum", checkpoint=where / "p", every_items=40)
    COMM.Barrier()
    want = np.array([sum(range(200)), sum(x * x for x in range(200)), 200])
    parallel_assert(
        np.array_equal(got, want) and twice(where) <= set(range(120, 160)),
        (got, sorted(twice(where))),
    )


def pairs(line):
    return [(w, 1) for w in line.split()] + [(len(line) % 3, 2)]


def test_keyed_map_reduce_resumes_to_the_counter(tmp_path_factory):
    where = folder(tmp_path_factory, "keyed")
    rng = np.random.default_rng(4)
    lines = [" ".join(f"w{v}" for v in rng.integers(0, 40, 9)) for _ in range(150)]
    want = collections.Counter()
    for line in lines:
        for k, v in pairs(line):
            want[k] += v
    mapper = Counted(where, lambda i: pairs(lines[i]))
    fail_at(where, 99)
    with pytest.raises(TaskError, match="failing at 99"):
        parcomp.map_reduce_keyed(
            mapper, range(150), checkpoint=where / "p", every_items=25, schedule="dynamic"
        )
    fail_at(where, None)
    got = parcomp.map_reduce_keyed(
        mapper, range(150), checkpoint=where / "p", every_items=25, root=None
    )
    everything = collections.Counter()
    for part in COMM.allgather(got):
        everything.update(part)
    parallel_assert(
        everything == want and twice(where) <= set(range(75, 100)),
        (len(everything), len(want), sorted(twice(where))),
    )


def slow(x):
    import time

    time.sleep(0.002)
    return x + 1


def test_every_seconds_commits_in_timed_rounds_through_a_users_checkpointer(tmp_path_factory):
    where = folder(tmp_path_factory, "timed")
    ckpt = parcomp.Checkpointer(where, handle_signals=False)
    out = parcomp.map(slow, range(300), checkpoint=ckpt, every_seconds=0.05)
    saves = ckpt.saves
    again = parcomp.map(slow, range(300), checkpoint=ckpt, every_seconds=0.05)  # all committed
    ckpt.close()
    parallel_assert(
        out == again == [x + 1 for x in range(300)] and saves >= 3 and ckpt.saves == saves,
        (saves, ckpt.saves),
    )


def test_progress_of_another_call_is_refused(tmp_path_factory):
    where = folder(tmp_path_factory, "other")
    parcomp.map(abs, range(-5, 5), checkpoint=where, every_items=3)
    with pytest.raises(ConfigError, match=r"another map call.*work items"):
        parcomp.map(abs, range(-5, 6), checkpoint=where, every_items=3)
    with pytest.raises(ConfigError, match=r"another map call.*kind of map"):
        parcomp.map_reduce(abs, range(-5, 5), checkpoint=where, every_items=3)
    again = parcomp.map(abs, range(-5, 6), checkpoint=where, every_items=3, resume="ignore")
    parallel_assert(again == [abs(x) for x in range(-5, 6)])


def test_a_changed_seed_in_a_closure_is_another_call(tmp_path_factory):
    where = folder(tmp_path_factory, "seed")

    def draws(seed):
        return lambda i: float(np.random.default_rng([seed, i]).random())

    parcomp.map_reduce(draws(1), range(20), checkpoint=where, every_items=5)
    with pytest.raises(ConfigError, match=r"mapper's code"):
        parcomp.map_reduce(draws(2), range(20), checkpoint=where, every_items=5)


def test_a_folder_of_other_checkpoints_is_refused(tmp_path_factory):
    where = folder(tmp_path_factory, "sim")
    ckpt = parcomp.Checkpointer(where, handle_signals=False)
    ckpt.save(3, scalars={"t": 1.0})
    ckpt.close()
    with pytest.raises(ConfigError, match="not a map's progress"):
        parcomp.map(abs, range(4), checkpoint=where)


def test_cadence_without_a_checkpoint_and_bad_values_are_refused(tmp_path_factory):
    where = folder(tmp_path_factory, "bad")
    with pytest.raises(ConfigError, match="go with checkpoint="):
        parcomp.map(abs, range(4), every_items=2)
    with pytest.raises(ConfigError, match="go with checkpoint="):
        parcomp.map_reduce_keyed(pairs, ["a"], resume="ignore")
    for bad in ({"every_items": 0}, {"every_seconds": -1}, {"every_seconds": float("nan")}):
        with pytest.raises(ConfigError, match="every_"):
            parcomp.map(abs, range(4), checkpoint=where, **bad)
    with pytest.raises(ConfigError, match="resume must be"):
        parcomp.map(abs, range(4), checkpoint=where, resume="no")
    with pytest.raises(ConfigError, match=r"a directory or a parcomp\.Checkpointer"):
        parcomp.map(abs, range(4), checkpoint=42)
    grid = parcomp.DistArray.zeros((8, 8))
    with pytest.raises(ConfigError, match="DistArray items"):
        parcomp.map_reduce(np.sum, grid, checkpoint=where)


class Box:
    def __init__(self, v):
        self.v = v


def boxed(x):
    return Box(x)


def test_a_committed_result_that_no_longer_loads_is_a_schema_error(tmp_path_factory):
    where = folder(tmp_path_factory, "renamed")
    parcomp.map(boxed, range(12), checkpoint=where, every_items=4)
    module = sys.modules[__name__]
    saved = module.Box
    del module.Box  # a class renamed since the progress was committed
    try:
        with pytest.raises(CheckpointSchemaError, match="does not load any more"):
            parcomp.map(boxed, range(12), checkpoint=where, every_items=4)
    finally:
        module.Box = saved
    out = parcomp.map(boxed, range(12), checkpoint=where, every_items=4)
    parallel_assert([b.v for b in out] == list(range(12)))


def test_damaged_progress_records_are_a_schema_error(tmp_path_factory):
    from parcomp.mapreduce.records import frame, unframe_blobs

    where = folder(tmp_path_factory, "damaged")
    ckpt = parcomp.Checkpointer(where, handle_signals=False)
    out = parcomp.map(abs, range(10), checkpoint=ckpt, every_items=5)
    restored = ckpt.restore(redeal=lambda lengths, r, p: (0, sum(lengths)))
    meta = restored.meta
    good = frame({0: 0})
    cut = np.ascontiguousarray(good[:-3])
    ckpt.save(restored.step + 1, local={"records": cut if RANK == 0 else good}, meta=meta)
    ckpt.close()
    with pytest.raises(CheckpointSchemaError, match=r"cut short|out of range|repeated"):
        parcomp.map(abs, range(10), checkpoint=where, every_items=5)
    with pytest.raises(CheckpointSchemaError):
        unframe_blobs(np.frombuffer(pickle.dumps(1), np.uint8), "here")
    parallel_assert(out == [abs(x) for x in range(10)])


def committed_items(where: Path) -> set[int]:
    from parcomp.mapreduce.records import unframe_blobs

    ckpt = parcomp.Checkpointer(where, handle_signals=False)
    restored = ckpt.restore(redeal=lambda lengths, r, p: (0, sum(lengths)))
    ckpt.close()
    return set(unframe_blobs(restored.local["records"], "test"))


def test_a_mapper_failing_only_after_a_resume_keeps_the_committed_progress(tmp_path_factory):
    where = folder(tmp_path_factory, "after")
    mapper = Counted(where)
    fail_at(where, 37)
    with pytest.raises(TaskError, match="failing at 37"):
        parcomp.map(mapper, range(80), checkpoint=where / "p", every_items=10)
    first = committed_items(where / "p")
    fail_at(where, 65)  # the resumed run fails later on
    with pytest.raises(TaskError, match="failing at 65"):
        parcomp.map(mapper, range(80), checkpoint=where / "p", every_items=10)
    second = committed_items(where / "p")
    fail_at(where, None)
    out = parcomp.map(mapper, range(80), checkpoint=where / "p", every_items=10)
    parallel_assert(
        first == set(range(30)) and second == set(range(60)) and out[79]["square"] == 79**2,
        (sorted(first), sorted(second)),
    )


def test_a_progress_folder_others_can_write_is_refused(tmp_path_factory):
    where = folder(tmp_path_factory, "shared")
    if RANK == 0:
        (where / "p").mkdir()
        (where / "p").chmod(0o777)
    COMM.Barrier()
    with pytest.raises(CheckpointError, match="writable by others"):
        parcomp.map(abs, range(4), checkpoint=where / "p")


def many_keys(i):
    keys = (np.arange(40) * 7919 + i * 13) % 3001
    return keys, np.sin(keys + i).astype(np.float64)


def test_a_budgeted_shuffle_commits_its_rounds_and_resumes_to_the_same_bits(tmp_path_factory):
    """Commits during the shuffle hold what each rank received and the rounds delivered;
    the same call resumed from such a commit skips those rounds and gives the same bits."""
    where = folder(tmp_path_factory, "shuffle")
    options = {"max_shuffle_bytes": 4096, "root": 0, "every_seconds": 1e-6}
    plain = parcomp.map_reduce_keyed(many_keys, range(60), max_shuffle_bytes=4096)
    first = parcomp.map_reduce_keyed(many_keys, range(60), checkpoint=where, **options)
    ckpt = parcomp.Checkpointer(where, handle_signals=False)
    meta = ckpt.restore(redeal=lambda lengths, r, p: (0, sum(lengths))).meta
    ckpt.close()
    again = parcomp.map_reduce_keyed(many_keys, range(60), checkpoint=where, **options)
    state = meta.get("parcomp.map.shuffle")
    if RANK == 0:
        want = collections.defaultdict(float)
        for i in range(60):
            for k, v in zip(*many_keys(i), strict=True):
                want[int(k)] += float(v)
        ok = (
            state is not None
            and state["rounds"] > 1
            and state["ranks"] == SIZE
            and first == again  # bitwise: the same rounds, in the same order
            and set(first) == set(want) == set(plain)
            and all(abs(first[k] - plain[k]) < 1e-9 for k in want)
            and all(abs(first[k] - want[k]) < 1e-9 for k in want)
        )
    else:
        ok = first is None and again is None
    parallel_assert(ok, state)


SCALE = 1  # a module global the mapper reads: not part of its identity (documented)


def scaled(x):
    return x * SCALE


def test_resume_ignore_starts_over_and_its_progress_is_the_newest(tmp_path_factory):
    """After resume="ignore", the old call's steps must not outlive the new ones: a later
    resume="yes" resumes the new progress (the review found the old one came back)."""
    global SCALE
    where = folder(tmp_path_factory, "ignore")
    SCALE = 1
    parcomp.map(scaled, range(60), checkpoint=where, every_items=7)
    SCALE = 2
    fresh = parcomp.map(scaled, range(60), checkpoint=where, every_items=20, resume="ignore")
    again = parcomp.map(scaled, range(60), checkpoint=where, every_items=20)
    SCALE = 1
    parallel_assert(fresh == again == [2 * x for x in range(60)], again[:4])


def test_resume_ignore_refuses_a_folder_of_other_checkpoints(tmp_path_factory):
    where = folder(tmp_path_factory, "ignore-other")
    ckpt = parcomp.Checkpointer(where, handle_signals=False)
    ckpt.save(100, scalars={"t": 1.0})
    ckpt.close()
    with pytest.raises(ConfigError, match="would prune them"):
        parcomp.map(abs, range(4), checkpoint=where, resume="ignore")
    parallel_assert((where / "step-00000100").is_dir())


def test_generator_items_are_identified_by_their_values(tmp_path_factory):
    where = folder(tmp_path_factory, "gen")
    parcomp.map(abs, (x for x in range(6)), checkpoint=where, every_items=2)
    with pytest.raises(ConfigError, match="work items"):
        parcomp.map(abs, (x + 100 for x in range(6)), checkpoint=where, every_items=2)
    same = parcomp.map(abs, (x for x in range(6)), checkpoint=where, every_items=2)
    parallel_assert(same == list(range(6)))


def lock_on_last_rank(x):
    import threading

    return threading.Lock() if x == 5 else x


def test_a_result_that_does_not_pickle_is_a_task_error_on_every_rank(tmp_path_factory):
    where = folder(tmp_path_factory, "unpickle")
    with pytest.raises(TaskError, match=r"item 5 .*pickle"):
        parcomp.map(lock_on_last_rank, range(8), checkpoint=where, every_items=8)


def test_a_root_that_is_not_a_rank_is_refused_before_any_work(tmp_path_factory):
    where = folder(tmp_path_factory, "root")
    for call in (parcomp.map, parcomp.map_reduce, parcomp.map_reduce_keyed):
        with pytest.raises(ConfigError, match=r"root=.* is not a rank"):
            call(abs, range(3), root=SIZE, checkpoint=where / call.__name__)
    parallel_assert(not any(where.iterdir()))
