"""Word count over text files with keyed map/reduce; generates a corpus when none is given.

Run:  parcomp run -n 2 jobs/wordcount.py [FILE ...] [--top 10]
      parcomp run -n 2 jobs/wordcount.py --generate 8 --words 200000

With ``--checkpoint-dir DIR`` the counts of finished files are committed as the job goes
(``map_reduce_keyed(checkpoint=...)``); a job killed or preempted and run again, on any rank
count, counts only the files not committed.

Each file is a work item; the mapper emits (word, count) pairs already combined per file,
the shuffle sends every word to its owner rank (CRC-32 of the word), and rank 0 gathers the
counts and prints the most frequent words.
"""

from __future__ import annotations

import argparse
import collections
import re
import tempfile
import time
from pathlib import Path

import numpy as np

import parcomp

WORD = re.compile(r"[a-z0-9']+")


def generate_corpus(folder: Path, files: int, words: int, seed: int = 3) -> list[Path]:
    """Write ``files`` text files of ``words`` Zipf-distributed words each (deterministic)."""
    vocab = [f"w{i:04d}" for i in range(5000)] + ["the", "of", "and", "parcomp"]
    rng = np.random.default_rng(seed)
    paths = []
    for f in range(files):
        ranks = np.minimum(rng.zipf(1.3, words), len(vocab)) - 1
        lines = [" ".join(vocab[r] for r in ranks[i : i + 12]) for i in range(0, words, 12)]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"part-{f:03d}.txt"
        path.write_text("\n".join(lines) + "\n")
        paths.append(path)
    return paths


def count_file(path: str) -> list[tuple[str, int]]:
    """(word, count) pairs of one file (combined locally)."""
    counts = collections.Counter()
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            counts.update(WORD.findall(line.lower()))
    return list(counts.items())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", help="text files (default: a generated corpus)")
    parser.add_argument("--generate", type=int, default=8, help="files to generate when none given")
    parser.add_argument("--words", type=int, default=200_000, help="words per generated file")
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument(
        "--checkpoint-dir",
        default=None,
        help="commit the counts to this folder as files finish; a rerun skips counted files "
        "(a generated corpus is then kept in DIR/corpus)",
    )
    parser.add_argument("--every-items", type=int, default=None, help="files per commit")
    parser.add_argument("--every-seconds", type=float, default=None, help="seconds per commit")
    args = parser.parse_args(argv)
    comm = parcomp.default_comm()
    tmp = None
    files = [str(p) for p in args.files]
    missing = [f for f in files if not Path(f).is_file()]
    parcomp.raise_if_any(parcomp.ConfigError(f"no such file(s): {missing}") if missing else None)
    if not files and args.checkpoint_dir:  # the same corpus again when the job is rerun
        where = Path(args.checkpoint_dir) / "corpus"
        paths = generate_corpus(where, args.generate, args.words) if comm.rank == 0 else None
        files = comm.bcast([str(p) for p in paths] if paths else None, root=0)
    elif not files:
        tmp = tempfile.TemporaryDirectory() if comm.rank == 0 else None
        paths = generate_corpus(Path(tmp.name), args.generate, args.words) if tmp else None
        files = comm.bcast([str(p) for p in paths] if paths else None, root=0)
    t0 = time.perf_counter()
    resumable = {}
    if args.checkpoint_dir:
        resumable = {
            "checkpoint": Path(args.checkpoint_dir) / "progress",
            "every_items": args.every_items,
            "every_seconds": args.every_seconds,
        }
    counts = parcomp.map_reduce_keyed(
        count_file, files, "sum", schedule="dynamic", chunksize=1, **resumable
    )
    if counts is not None:
        total = sum(counts.values())
        print(
            f"wordcount: {len(files)} files, {total} words, {len(counts)} distinct, "
            f"{parcomp.size()} ranks, {time.perf_counter() - t0:.2f} s"
        )
        for word, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: args.top]:
            print(f"  {n:10d}  {word}")
    comm.Barrier()  # rank 0 keeps the generated corpus until everyone has read it
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
