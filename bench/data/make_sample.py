"""Make bench/data/docs.txt: a seeded sample of the CDE authors' random documents, same length mix.

    python bench/data/make_sample.py SOURCE [--out bench/data/docs.txt] [--n 600] [--seed 0]

SOURCE is `random_docs.txt` from the public jxmorris12/cde repository (MIT License,
Copyright (c) 2024 Cornell University), one text per line. The benchmarks read the committed
output; they never need SOURCE (pass it with `--corpus` to bench on all of it).

The candidates are the lines a benchmark reads as texts (split on "\\n", blank lines dropped),
minus the few that hold a "\\r". They are sorted by length and cut into 10 strata of equal
count; each stratum gives the same number of lines, so the length distribution (short titles
and questions up to 4,096-character pages) stays that of the source. Lines are written
unchanged, in their original order.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

STRATA = 10
OUT = Path(__file__).resolve().parent / "docs.txt"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="random_docs.txt (one text per line)")
    parser.add_argument(
        "--out", type=Path, default=OUT, help=f"default: {OUT.name} beside this script"
    )
    parser.add_argument("--n", type=int, default=600, help="lines to keep (a multiple of 10)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.n <= 0 or args.n % STRATA:
        parser.error(f"--n must be a positive multiple of {STRATA}")

    lines = args.source.read_bytes().decode("utf-8").split("\n")  # no newline translation
    pool = [i for i, line in enumerate(lines) if line.strip() and "\r" not in line]
    pool.sort(key=lambda i: (len(lines[i]), i))
    rng = random.Random(args.seed)
    size, per_stratum = len(pool) / STRATA, args.n // STRATA
    picked: list[int] = []
    for s in range(STRATA):
        stratum = pool[round(s * size) : round((s + 1) * size)]
        picked += rng.sample(stratum, per_stratum)
    picked.sort()
    args.out.write_text("".join(lines[i] + "\n" for i in picked), encoding="utf-8")
    lengths = sorted(len(lines[i]) for i in picked)
    print(
        f"{args.out}: {len(picked)} of {len(pool)} texts; characters: median "
        f"{lengths[len(lengths) // 2]}, 90th percentile {lengths[int(0.9 * len(lengths))]}, "
        f"longest {lengths[-1]}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
