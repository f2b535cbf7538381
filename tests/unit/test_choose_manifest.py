"""The node-local tier's choice between the nodes' copies of a manifest (PURE): a vote
that an edited, re-signed copy cannot win by claiming a newer id or creation time."""

from parcomp.checkpoint.local import choose_manifest


def view(node, digest, created=1.0, ident="a", error=None):
    return {"node": node, "digest": digest, "created": created, "id": ident, "error": error}


def test_the_copies_agreeing_win():
    views = [view("n0", "A"), None, view("n1", "A"), view("n2", "A")]
    assert choose_manifest(views) == ("A", 0)


def test_a_resigned_copy_with_a_new_id_and_time_is_outvoted_or_refused():
    forged = view("n1", "F", created=9e9, ident="ffff")
    assert choose_manifest([view("n0", "A"), forged]) != ("F", 1)
    assert isinstance(choose_manifest([view("n0", "A"), forged]), str)  # a tie: refused
    assert choose_manifest([view("n0", "A"), forged, view("n2", "A")]) == ("A", 0)


def test_unreadable_copies_count_as_holders_absent_ones_do_not():
    broken = view("n1", None, error="not valid JSON")
    absent = view("n2", None, error="absent")
    assert choose_manifest([view("n0", "A"), broken, absent]) == ("A", 0)
    two = [view("n0", "A"), view("n1", "B"), view("n2", None, error="bad"), absent]
    assert isinstance(choose_manifest(two), str)
    assert "no node holds a valid manifest" in choose_manifest([broken, absent])
