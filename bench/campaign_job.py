"""One rank count of the scale campaign (bench/campaign.py): map/reduce and keyed shuffles.

Prints one line of JSON on rank 0: a digest per case.  Every case is computed so that
its result does not depend on the rank count; the campaign compares the digests.
"""

from __future__ import annotations

import hashlib
import json
import sys

import numpy as np

import parcomp


def digest(value: object) -> str:
    return hashlib.sha256(repr(value).encode()).hexdigest()[:16]


def term(i: int) -> float:
    return float(np.sin(0.001 * i) / (1.0 + i))


def words(i: int) -> list[tuple[str, int]]:
    rng = np.random.default_rng(i)
    return [(f"w{int(k)}", 1) for k in rng.zipf(1.3, 200) % 5000]


def main() -> None:
    items = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    out: dict[str, str] = {}
    for schedule in ("block", "cyclic", "dynamic"):
        total = parcomp.map_reduce(term, range(items), "sum", schedule=schedule, deterministic=True)
        out[f"map_reduce {schedule}"] = digest(total)
        got = parcomp.map(lambda i: i * i % 97, range(items // 10), schedule=schedule)
        out[f"map {schedule}"] = digest(got)
    counts = parcomp.map_reduce_keyed(words, range(items // 20), schedule="dynamic")
    out["keyed words"] = digest(sorted(counts.items()) if counts is not None else None)
    budget = 2 * 64 * parcomp.size() * 32
    counts = parcomp.map_reduce_keyed(
        words, range(items // 20), schedule="cyclic", max_shuffle_bytes=budget
    )
    out["keyed words, budget"] = digest(sorted(counts.items()) if counts is not None else None)
    if parcomp.rank() == 0:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
