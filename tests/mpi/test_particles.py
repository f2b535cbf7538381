"""DistParticles on 1..4 ranks against a serial NumPy reference of the same particles."""

import hashlib

import numpy as np
import pytest
from mpi4py import MPI

from parcomp.arrays.array import DistArray
from parcomp.grid.partition import Partition
from parcomp.particles import plan as plan
from parcomp.particles.dist import DistParticles
from parcomp.runtime.errors import ConfigError, ShapeError
from parcomp.testing import parallel_assert

SIZE = MPI.COMM_WORLD.size
RANK = MPI.COMM_WORLD.rank
COMM = MPI.COMM_WORLD


def population(n=600, ndim=2, seed=5, box=(8.0, 6.0, 4.0)):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (n, ndim)) * np.asarray(box[:ndim])
    return {
        "x": x,
        "id": np.arange(n, dtype=np.int64),
        "v": rng.normal(size=(n, ndim)).astype(np.float32),
        "tag": (np.arange(n) % 7).astype(np.int8),
    }


def my_share(fields):
    """A rank's arbitrary starting share (not by position): the constructor moves them."""
    n = len(fields["id"])
    rows = np.arange(n)[(np.arange(n) * 7 + 3) % SIZE == RANK]
    return {k: v[rows].copy() for k, v in fields.items()}


def gathered(p):
    """All particles as one dict sorted by id (every rank gets it)."""
    parts = COMM.allgather({k: v for k, v in p.fields.items()})
    out = {k: np.concatenate([d[k] for d in parts]) for k in p.fields}
    order = np.argsort(out["id"])
    return {k: v[order] for k, v in out.items()}


def box_of(shape, ndim):
    return [(0.0, b) for b in (8.0, 6.0, 4.0)[:ndim]]


@pytest.mark.parametrize("periodic", [True, False])
@pytest.mark.parametrize("ndim", [2, 3])
def test_migrate_puts_every_particle_on_its_owner(periodic, ndim):
    shape = (8, 6, 4)[:ndim]
    G = population(ndim=ndim)
    grid = DistArray(shape, periods=periodic)
    p = DistParticles(grid, my_share(G), box=box_of(shape, ndim), order_by="id")
    box = plan.Box.create(box_of(shape, ndim), shape)
    parallel_assert(p.count() == 600)
    parallel_assert(bool((plan.owners(p["x"], box, grid.partition) == RANK).all()), "owners")
    parallel_assert(bool((np.diff(p["id"]) > 0).all()), "sorted by id")
    # move every particle by an amount fixed by its id; compare with the serial update
    step = np.stack([np.sin(p["id"] * (a + 1.3)) * 2.5 for a in range(ndim)], axis=1)
    if not periodic:
        step *= 0.1
    upper = np.nextafter(np.asarray(box.hi), 0)
    p["x"] = p["x"] + step if periodic else np.clip(p["x"] + step, 0.0, upper)
    p.migrate()
    got = gathered(p)
    want = {k: v.copy() for k, v in G.items()}
    want["x"] += np.stack([np.sin(want["id"] * (a + 1.3)) * 2.5 for a in range(ndim)], axis=1) * (
        1 if periodic else 0.1
    )
    if periodic:
        plan.wrap(want["x"], box, (True,) * ndim)
    else:
        want["x"] = np.clip(want["x"], 0.0, upper)
    for k in G:
        parallel_assert(np.array_equal(got[k], want[k]), f"field {k}")
    parallel_assert(bool((plan.owners(p["x"], box, grid.partition) == RANK).all()))
    root = SIZE - 1
    whole = p.gather(root=root)
    if RANK == root:
        parallel_assert(all(np.array_equal(whole[k], got[k]) for k in G), "gather")
    else:
        parallel_assert(whole is None)


def test_drop_counts_particles_leaving_a_wall():
    G = population()
    grid = DistArray((8, 6), periods=(False, True))
    p = DistParticles(grid, my_share(G), box=box_of((8, 6), 2), out_of_domain="drop")
    p["x"][:, 0] += np.where(p["id"] % 10 == 0, 100.0, 0.0)  # 60 leave through the wall
    p["x"][:, 1] += 13.0  # the periodic axis wraps
    dropped = p.migrate()
    parallel_assert(dropped == 60 and p.dropped == 60 and p.count() == 540, f"{dropped}")


def test_leaving_a_wall_raises_on_every_rank_by_default():
    grid = DistArray((8, 6))
    p = DistParticles(grid, my_share(population()), box=box_of((8, 6), 2))
    if RANK == SIZE - 1 and p.n_local:
        p["x"][0, 0] = -0.5
    elif RANK == 0:
        p["x"][:1, 0] = -0.5  # at least one rank has one
    with pytest.raises(ShapeError, match="left the domain"):
        p.migrate()


def test_nan_position_raises_on_every_rank():
    grid = DistArray((8, 6), periods=True)
    fields = my_share(population())
    p = DistParticles(grid, fields, box=box_of((8, 6), 2))
    if RANK == 0:
        p.fields["x"] = np.concatenate([p["x"], [[np.nan, 1.0]]])
        p.fields["id"] = np.concatenate([p["id"], [999]])
        p.fields["v"] = np.concatenate([p["v"], np.zeros((1, 2), np.float32)])
        p.fields["tag"] = np.concatenate([p["tag"], [0]]).astype(np.int8)
    with pytest.raises(ShapeError, match="NaN or infinite"):
        p.migrate()
    bad = my_share(population())
    if RANK == 0:
        bad["x"][:1] = np.inf
    with pytest.raises(ShapeError, match="NaN or infinite"):
        DistParticles(grid, bad, box=box_of((8, 6), 2))


def test_mismatched_field_lengths_raise_on_every_rank():
    grid = DistArray((8, 6), periods=True)
    bad = my_share(population())
    if RANK == SIZE - 1:
        bad["v"] = bad["v"][:-1] if len(bad["v"]) else np.zeros((1, 2), np.float32)
    with pytest.raises(ShapeError, match="different lengths"):
        DistParticles(grid, bad, box=box_of((8, 6), 2))
    p = DistParticles(grid, my_share(population()), box=box_of((8, 6), 2))
    if RANK == 0:
        p.fields["tag"] = p.fields["tag"][:-1] if p.n_local else np.zeros(1, np.int8)
    with pytest.raises(ShapeError, match="different lengths"):
        p.migrate()


def test_bad_arguments_raise_on_every_rank():
    grid = DistArray((8, 6), periods=True)
    with pytest.raises(ShapeError, match="no position field"):
        DistParticles(grid, {"y": np.zeros((0, 2))})
    with pytest.raises(ShapeError, match=r"shape \(m, 2\)"):
        DistParticles(grid, {"x": np.zeros((3, 3))})
    with pytest.raises(ConfigError, match="out_of_domain"):
        DistParticles(grid, {"x": np.zeros((0, 2))}, out_of_domain="bounce")
    with pytest.raises(ConfigError, match="order_by"):
        DistParticles(grid, {"x": np.zeros((0, 2))}, order_by="x")
    with pytest.raises(ConfigError, match="field name"):
        DistParticles(grid, {"x": np.zeros((0, 2)), "a/b": np.zeros(0)})
    if SIZE > 1:
        extra = {"x": np.zeros((0, 2))}
        if RANK == 1:
            extra["w"] = np.zeros(0)
        with pytest.raises(ConfigError, match="differ between ranks"):
            DistParticles(grid, extra)


def brute_images(G, box, cutoff, partition, rank):
    """(id, image position) of every particle image within cutoff of rank's block, not owned."""
    lo, hi = box.block(partition, rank)
    ndim = partition.ndim
    out = set()
    shifts = (
        np.array(
            np.meshgrid(*[[-1, 0, 1] if per else [0] for per in partition.periods], indexing="ij")
        )
        .reshape(ndim, -1)
        .T
    )
    for s in shifts:
        img = G["x"] + s * box.length
        d = np.maximum(0, np.maximum(lo - img, img - hi))
        inside = ((img >= lo) & (img < hi)).all(axis=1)
        near = (d < cutoff).all(axis=1) & ~inside
        for i in np.flatnonzero(near):
            out.add((int(G["id"][i]), tuple(img[i].round(9))))
    return out


@pytest.mark.parametrize("periodic", [True, False])
@pytest.mark.parametrize("ndim", [2, 3])
def test_ghosts_include_faces_edges_and_corners(periodic, ndim):
    shape = (8, 6, 4)[:ndim]
    G = population(ndim=ndim)
    grid = DistArray(shape, periods=periodic)
    p = DistParticles(grid, my_share(G), box=box_of(shape, ndim), order_by="id")
    box = p.box
    cutoff = 0.9 * min(
        box.spacing(shape)[a] * (shape[a] // grid.partition.dims[a]) for a in range(ndim)
    )
    cutoff = min(cutoff, 0.45 * min(box.length))
    n = p.ghosts(cutoff)
    parallel_assert(n == p.n_ghost and set(p.ghost_fields) == set(p.fields))
    got = {
        (int(i), tuple(x.round(9)))
        for i, x in zip(p.ghost_fields["id"], p.ghost_fields["x"], strict=True)
    }
    want = brute_images(G, box, cutoff, grid.partition, RANK)
    parallel_assert(want <= got, f"missing {sorted(want - got)[:3]}")
    lo, hi = box.block(grid.partition, RANK)
    gx = p.ghost_fields["x"]
    d = np.maximum(0, np.maximum(lo - gx, gx - hi))
    parallel_assert(bool((d <= cutoff).all()), "no ghost beyond the cutoff")
    ids = p.ghost_fields["id"]
    parallel_assert(bool((np.diff(ids) >= 0).all()), "ghosts sorted by id")
    by_id = dict(zip(G["id"].tolist(), G["tag"].tolist(), strict=True))
    parallel_assert(
        all(by_id[int(i)] == t for i, t in zip(ids, p.ghost_fields["tag"], strict=True)),
        "fields travel",
    )
    p.clear_ghosts()
    parallel_assert(p.n_ghost == 0)


def test_cutoff_wider_than_a_block_raises_on_every_rank():
    grid = DistArray((8, 6), periods=True)
    p = DistParticles(grid, my_share(population()), box=box_of((8, 6), 2))
    with pytest.raises(ShapeError, match=r"wider than the smallest block|half the periodic"):
        p.ghosts(5.0)
    with pytest.raises(ShapeError, match="positive"):
        p.ghosts(-1.0)


def test_ghosts_after_moving_without_migrate_raise():
    grid = DistArray((8, 6), periods=True)
    p = DistParticles(grid, my_share(population()), box=box_of((8, 6), 2))
    lo, hi = p.box.block(grid.partition, (RANK + 1) % SIZE)
    if RANK == 0 and p.n_local and SIZE > 1:
        p["x"][0] = (lo + hi) / 2  # the centre of another rank's block
    moved = COMM.allreduce(bool(RANK == 0 and p.n_local and SIZE > 1))
    parallel_assert(moved == (SIZE > 1), "rank 0 has particles to move")
    if moved:
        with pytest.raises(ShapeError, match="call migrate"):
            p.ghosts(0.5)
        with pytest.raises(ShapeError, match="call migrate"):
            p.deposit(DistArray((8, 6), periods=True))


def serial_cic(G, shape, box, periods, weights):
    """Independent serial cloud-in-cell (np.add.at over the whole population)."""
    out = np.zeros(shape)
    h = box.spacing(shape)
    s = G["x"] / h - 0.5
    base = np.floor(s).astype(int)
    frac = s - base
    ndim = len(shape)
    for corner in np.ndindex(*(2,) * ndim):
        w = weights.copy()
        idx = []
        for a, bit in enumerate(corner):
            w *= frac[:, a] if bit else 1 - frac[:, a]
            c = base[:, a] + bit
            c = c % shape[a] if periods[a] else np.clip(c, 0, shape[a] - 1)
            idx.append(c)
        np.add.at(out, tuple(idx), w)
    return out


@pytest.mark.parametrize("periodic", [True, False])
@pytest.mark.parametrize("ndim", [2, 3])
def test_deposit_cic_equals_a_serial_deposit(periodic, ndim):
    shape = (8, 6, 4)[:ndim]
    G = population(ndim=ndim)
    w = 1.0 + (G["id"] % 5)
    grid = DistArray(shape, periods=periodic)
    for order_by in (None, "id"):
        p = DistParticles(
            grid,
            {**my_share(G), "w": my_share({"w": w, "id": G["id"]})["w"]},
            box=box_of(shape, ndim),
            order_by=order_by,
        )
        rho = DistArray(shape, periods=periodic, halo=1)
        p.deposit(rho, "w")
        ref = serial_cic(G, shape, p.box, (periodic,) * ndim, w.astype(float))
        whole = rho.gather()
        ok = RANK != 0 or (
            np.allclose(whole, ref, rtol=1e-12, atol=1e-12) and np.isclose(whole.sum(), w.sum())
        )
        parallel_assert(ok, f"order_by={order_by}")
        ngp = DistArray(shape, periods=periodic)
        p.deposit(ngp, scheme="ngp")
        counts = ngp.gather()
        if RANK == 0:
            cells = plan.cells(G["x"], p.box, shape)
            want = np.zeros(shape)
            np.add.at(want, tuple(cells.T), 1.0)
            parallel_assert(np.array_equal(counts, want), "ngp counts")
        else:
            parallel_assert(True)


def test_deterministic_deposit_is_the_same_bits_as_one_rank():
    """The canonical-order deposit on SIZE ranks equals the one on a single rank, bit for bit."""
    shape = (8, 6)
    G = population(n=2000)
    w = np.sin(G["id"] * 0.37) + 1.5
    fields = {**my_share(G), "w": w[(np.arange(2000) * 7 + 3) % SIZE == RANK]}
    p = DistParticles(DistArray(shape, periods=True), fields, box=box_of(shape, 2), order_by="id")
    rho = DistArray(shape, periods=True)
    p.deposit(rho, "w")
    whole = rho.gather()
    if RANK == 0:
        one = DistParticles(
            Partition.create(shape, 1, periods=True),
            {**G, "w": w},
            box=box_of(shape, 2),
            order_by="id",
            comm=MPI.COMM_SELF,
        )
        ref = DistArray(shape, periods=True, comm=MPI.COMM_SELF)
        one.deposit(ref, "w")
        same = (
            hashlib.sha256(whole.tobytes()).digest()
            == hashlib.sha256(ref.interior.tobytes()).digest()
        )
        parallel_assert(same, "bitwise")
    else:
        parallel_assert(True)


def test_deposit_target_must_match_the_grid():
    grid = DistArray((8, 6), periods=True)
    p = DistParticles(grid, my_share(population()), box=box_of((8, 6), 2))
    with pytest.raises(ShapeError, match="deposit target"):
        p.deposit(DistArray((8, 7), periods=True))
    with pytest.raises(ShapeError, match="floating-point"):
        p.deposit(DistArray((8, 6), np.int32, periods=True))
    with pytest.raises(ShapeError, match="one real number per particle"):
        p.deposit(DistArray((8, 6), periods=True), np.ones(p.n_local + 1))
    with pytest.raises(ShapeError, match="scheme"):
        p.deposit(DistArray((8, 6), periods=True), scheme="tsc")


def test_checkpoint_and_restore_on_one_rank(tmp_path_factory):
    from parcomp.checkpoint import Checkpointer

    folder = COMM.bcast(str(tmp_path_factory.mktemp("pck")) if RANK == 0 else None)
    G = population()
    grid = DistArray((8, 6), periods=True)
    p = DistParticles(grid, my_share(G), box=box_of((8, 6), 2), order_by="id")
    ck = Checkpointer(folder, handle_signals=False)
    ck.save(3, local=p.checkpoint_state())
    ck.close()
    if RANK == 0:
        one = Checkpointer(folder, handle_signals=False, comm=MPI.COMM_SELF)
        restored = one.restore()
        q = DistParticles.restore(
            Partition.create((8, 6), 1, periods=True),
            restored,
            box=box_of((8, 6), 2),
            order_by="id",
            comm=MPI.COMM_SELF,
        )
        one.close()
        ok = restored.step == 3 and all(np.array_equal(q[k], G[k]) for k in G)
        parallel_assert(ok, "restored on one rank")
    else:
        parallel_assert(True)
    COMM.Barrier()
    again = Checkpointer(folder, handle_signals=False)
    r = DistParticles.restore(grid, again.restore(), box=box_of((8, 6), 2), order_by="id")
    again.close()
    got = gathered(r)
    parallel_assert(all(np.array_equal(got[k], G[k]) for k in G), "restored on every rank")


# ------------------------------------------------------------------ found by the hostile review


@pytest.mark.parametrize("order_by", [None, "id"])
def test_deposit_with_ranks_that_own_no_particles(order_by):
    """Every particle on rank 0: the others own none, yet receive its deposit (a rank with
    no particles sent integer zeros into its neighbours' float deposit: garbage)."""
    shape = (8, 6)
    G = population(n=300)
    fields = G if RANK == 0 else {k: v[:0] for k, v in G.items()}
    grid = DistArray(shape, periods=True)
    lo, hi = plan.Box.create(box_of(shape, 2), shape).block(grid.partition, 0)
    G0 = {k: v.copy() for k, v in G.items()}
    G0["x"] = lo + (G["x"] / np.asarray((8.0, 6.0))) * (hi - lo) * 0.999  # all in rank 0's block
    fields = G0 if RANK == 0 else {k: v[:0] for k, v in G0.items()}
    p = DistParticles(grid, fields, box=box_of(shape, 2), order_by=order_by)
    parallel_assert(p.n_local == (300 if RANK == 0 else 0))
    rho = DistArray(shape, periods=True)
    p.deposit(rho)
    whole = rho.gather()
    ref = serial_cic(G0, shape, p.box, (True, True), np.ones(300))
    ok = RANK != 0 or (
        np.allclose(whole, ref, rtol=1e-12, atol=1e-12) and np.isclose(whole.sum(), 300)
    )
    parallel_assert(ok, "deposit with empty ranks")


@pytest.mark.skipif(SIZE < 2, reason="needs ranks that disagree")
def test_arguments_that_differ_between_ranks_raise_everywhere():
    grid = DistArray((8, 6), periods=True)
    p = DistParticles(grid, my_share(population()), box=box_of((8, 6), 2))
    with pytest.raises(ConfigError, match="cutoff differs"):
        p.ghosts(1.0 if RANK else 0.5)
    with pytest.raises(ConfigError, match="differ between ranks"):
        p.deposit(DistArray((8, 6), periods=True), scheme="cic" if RANK else "ngp")
    with pytest.raises(ConfigError, match="root differs"):
        p.gather(root=RANK)
    with pytest.raises(ConfigError, match="root must be a rank"):
        p.gather(root=SIZE)


def test_order_by_must_be_unique():
    grid = DistArray((8, 6), periods=True)
    fields = my_share(population())
    fields["id"] = fields["id"] // 3  # repeated keys, on one rank or across ranks
    with pytest.raises(ConfigError, match="must be unique"):
        DistParticles(grid, fields, box=box_of((8, 6), 2), order_by="id")
    same = my_share(population())
    same["id"] = np.arange(len(same["id"]))  # every rank numbers its own from 0
    if SIZE > 1:
        with pytest.raises(ConfigError, match="must be unique"):
            DistParticles(grid, same, box=box_of((8, 6), 2), order_by="id")
    p = DistParticles(grid, my_share(population()), box=box_of((8, 6), 2), order_by="id")
    if RANK == 0 and p.n_local > 1:
        p["id"][1] = p["id"][0]  # a duplicate made later, on one rank
    dup = COMM.allreduce(int(RANK == 0 and p.n_local > 1))
    if dup:
        with pytest.raises(ConfigError, match="must be unique"):
            p.migrate()


@pytest.mark.parametrize("jump", [0.3, 9.0])
def test_migrate_goes_to_neighbours_only_when_it_can(jump):
    """Small steps: counts and records to the neighbours only; jumps past them (slabs
    along a wall-bounded axis): Alltoall.  The same particles either way."""
    shape = (4 * SIZE, 4)
    grid = DistArray(shape, dims=(SIZE, 1))
    n = 400
    rng = np.random.default_rng(11)
    G = {"x": rng.uniform(0.2, 0.8, (n, 2)) * np.asarray(shape, float), "id": np.arange(n)}
    p = DistParticles(grid, my_share(G), order_by="id")
    step = np.where(p["id"] % 2 == 0, jump, -jump)[:, None] * np.array([[1.0, 0.0]])
    p["x"] = np.clip(p["x"] + step, 0.0, np.nextafter(np.asarray(shape, float), 0))
    p.migrate()
    want_x = np.clip(
        G["x"] + np.where(G["id"] % 2 == 0, jump, -jump)[:, None] * np.array([[1.0, 0.0]]),
        0.0,
        np.nextafter(np.asarray(shape, float), 0),
    )
    got = gathered(p)
    parallel_assert(np.array_equal(got["x"], want_x) and np.array_equal(got["id"], G["id"]))
    expected = "neighbors" if jump < 4 or SIZE < 3 else "alltoall"
    parallel_assert(p.last_route == expected, f"{p.last_route} != {expected}")


def test_a_field_replaced_with_another_layout_raises_on_every_rank():
    """Fields are plain arrays in a dict: code can replace one with another dtype or
    trailing shape on one rank; the packed records would then be cast, or fail there only."""
    grid = DistArray((8, 6), periods=True)
    for bad in ("dtype", "shape", "name"):
        p = DistParticles(grid, my_share(population()), box=box_of((8, 6), 2))
        if RANK == SIZE - 1:
            if bad == "dtype":
                p.fields["tag"] = p.fields["tag"].astype(np.float64)
            elif bad == "shape":
                p.fields["v"] = np.zeros((p.n_local, 3), np.float32)
            else:
                p.fields["extra"] = np.zeros(p.n_local)
        with pytest.raises(ShapeError, match="expected"):
            p.migrate()
        with pytest.raises(ShapeError, match="expected"):
            p.ghosts(0.5)
        with pytest.raises(ShapeError, match="expected"):
            p.deposit(DistArray((8, 6), periods=True))
