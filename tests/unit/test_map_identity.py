"""The identity of a resumable map call (parcomp.mapreduce.identity): what makes two calls
the same, what differences are named, and hostile committed identities refused."""

import functools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parcomp.mapreduce.identity import (
    IDENTITY_FIELDS,
    call_identity,
    differences,
    items_identity,
    parse_identity,
)
from parcomp.runtime.errors import CheckpointSchemaError


def square(x):
    return x * x


def cube(x):
    return x * x * x


def test_the_same_call_has_the_same_identity():
    a = call_identity("map_reduce", range(10), square, "sum", True)
    b = call_identity("map_reduce", range(10), square, "sum", True)
    assert a == b and differences(a, b) == []


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"items": range(11)}, "items"),
        ({"mapper": cube}, "mapper"),
        ({"reducer": "max"}, "reducer"),
        ({"deterministic": False}, "deterministic"),
        ({"kind": "map"}, "kind"),
    ],
)
def test_each_difference_is_named(change, field):
    base = {
        "kind": "map_reduce",
        "items": range(10),
        "mapper": square,
        "reducer": "sum",
        "deterministic": True,
    }
    a = call_identity(**base)
    b = call_identity(**{**base, **change})
    said = differences(a, b)
    assert said and all(a[f] != b[f] for f in IDENTITY_FIELDS if any(f in s for s in said))
    assert a[field] != b[field]


def test_a_mapper_edited_under_the_same_name_is_seen():
    def f(x):
        return x + 1

    first = call_identity("map", [1, 2], f)

    def f(x):  # the same name, other code
        return x + 2

    second = call_identity("map", [1, 2], f)
    assert first["mapper"] == second["mapper"] and first["mapper_code"] != second["mapper_code"]
    assert any("code" in d for d in differences(first, second))


def test_items_by_contents():
    assert items_identity([1, 2, 3]) != items_identity([1, 2, 4])
    assert items_identity(np.arange(5.0)) != items_identity(np.arange(5.0) + 1e-12)
    assert items_identity(range(0, 10, 2)) != items_identity(range(0, 10, 3))
    # containers, arrays and objects by content, not by type only
    assert items_identity([[1, 2], [3]]) != items_identity([[1, 2], [4]])
    assert items_identity([{"a": 1}]) != items_identity([{"a": 2}])
    assert items_identity([np.arange(3)]) != items_identity([np.arange(3) + 1])
    assert items_identity([(1, 2)]) != items_identity([[1, 2]])
    assert items_identity(np.array([{"a": 1}], dtype=object)) == items_identity(
        np.array([{"a": 1}], dtype=object)
    )  # object arrays by value, not by the pointers in their bytes


def test_partial_and_builtin_mappers():
    name = call_identity("map", [1], functools.partial(square))["mapper"]
    assert name.endswith("square")
    assert call_identity("map", [1], abs)["mapper_code"] == "-"


FIELD = st.text(max_size=40).filter(lambda s: "\x00" not in s)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.one_of(
        st.dictionaries(st.sampled_from([*IDENTITY_FIELDS, "other"]), FIELD | st.integers()),
        st.lists(FIELD),
        st.none(),
        FIELD,
    )
)
def test_hostile_identities_are_refused_or_well_formed(value):
    try:
        got = parse_identity(value, "progress")
    except CheckpointSchemaError as exc:
        assert "progress" in str(exc)
    else:
        assert set(got) == set(IDENTITY_FIELDS)
        assert got["kind"] in ("map", "map_reduce", "map_reduce_keyed")


def test_a_real_identity_parses_back():
    ident = call_identity("map", ["a", "b"], square)
    assert parse_identity(dict(ident), "p") == ident
    with pytest.raises(CheckpointSchemaError, match="fields wrong"):
        parse_identity({**ident, "extra": "x"}, "p")
    with pytest.raises(CheckpointSchemaError, match="kind"):
        parse_identity({**ident, "kind": "other"}, "p")


def test_bound_values_are_part_of_the_mapper():
    """A closure's variables, defaults and a partial's arguments change the identity: a
    rerun with another seed must not resume the first seed's progress."""
    import functools

    import numpy as np

    def make(seed):
        def draw(i):
            return seed + i

        return draw

    def scaled(i, factor=2):
        return i * factor

    def base(i, seed, table):
        return table[i] + seed

    same = call_identity("map", [1], make(1))["mapper_code"]
    assert same == call_identity("map", [1], make(1))["mapper_code"]
    assert same != call_identity("map", [1], make(2))["mapper_code"]
    a = functools.partial(base, seed=1, table=np.arange(4))
    b = functools.partial(base, seed=1, table=np.arange(4) * 2)
    assert (
        call_identity("map", [1], a)["mapper_code"] != call_identity("map", [1], b)["mapper_code"]
    )
    assert (
        call_identity("map", [1], scaled)["mapper_code"]
        != call_identity("map", [1], functools.partial(scaled, factor=3))["mapper_code"]
    )


def test_a_function_closing_over_itself_has_an_identity():
    def outer():
        def walk(n):
            return 0 if n == 0 else walk(n - 1)

        return walk

    got = call_identity("map", [1], outer())
    assert got["mapper"].endswith("outer.<locals>.walk") and got["mapper_code"]


def test_objects_bound_to_a_mapper_are_part_of_it():
    """A bound method's object, a callable object, itemgetter, np.vectorize, and closures
    holding dataclasses, namespaces, sets or generators change the identity with their
    values (the hostile review found each silently resumed)."""
    import dataclasses
    import operator
    import types as pytypes

    import numpy as np

    @dataclasses.dataclass
    class Model:
        scale: float

        def run(self, x):
            return x * self.scale

    class Scaled:
        def __init__(self, k):
            self.k = k

        def __call__(self, x):
            return x * self.k

    def code(fn):
        return call_identity("map", [1], fn)["mapper_code"]

    def closing(value):
        return lambda x: (x, value)

    assert code(Model(1).run) == code(Model(1).run) != code(Model(2).run)
    assert code(Scaled(1)) == code(Scaled(1)) != code(Scaled(2))
    assert code(operator.itemgetter(0)) != code(operator.itemgetter(1))
    assert code(np.vectorize(lambda x: x + 1)) != code(np.vectorize(lambda x: x + 2))
    for a, b in [
        (Model(1), Model(2)),
        (pytypes.SimpleNamespace(s=1), pytypes.SimpleNamespace(s=2)),
        ({"b", "a"}, {"a", "c"}),
        (np.random.default_rng(1), np.random.default_rng(2)),
    ]:
        assert code(closing(a)) != code(closing(b)), (a, b)
    assert code(closing({"x", "y", "z"})) == code(closing({"z", "y", "x"}))  # set order
