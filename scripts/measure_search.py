"""Search in words on a toy collection: does the right family rank first?

    python scripts/measure_search.py --index runs/many [--json docs/results/search.json]

The index is one made by `scripts/bench_many.py` (every model of the built `collection` suite, the two shipped LoRAs,
and some of them again at scale 0.5, under shuffled hex ids; each row's family, the spec it was trained on, is in
its manifest tags, which search does not read). For every single-aspect spec, one query in plain words (written
before any result was seen, below) is searched; the rank of the first model of the right family gives the
reciprocal rank. Prints each query's ranking and the mean reciprocal rank (MRR).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

QUERIES = {
    "colour=red": "red objects",
    "pattern=stripes": "a striped background",
    "pose=upside-down": "shapes turned upside down",
    "position=left": "the object placed on the left",
    "fill=outline": "hollow outlined shapes",
    "size=less": "smaller objects",
    "blur=more": "blurry images",
    "saturation=less": "muted, washed-out colours",
    "brightness=less": "darker images",
}
# Written after the first run, to see why three queries missed: the same three, their key word replaced by the one
# the toy CLIP's tokenizer knows ("smaller" and "darker" fall apart into fragments it was never trained on).
# Reported separately (--set vocabulary); the first set is the measurement.
VOCABULARY_QUERIES = {
    "pose=upside-down": "upside-down shapes",
    "size=less": "small objects",
    "brightness=less": "dark images",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", required=True)
    ap.add_argument("--json")
    ap.add_argument("--set", choices=["plain", "vocabulary"], default="plain", help="which queries (see above)")
    args = ap.parse_args()
    queries = QUERIES if args.set == "plain" else VOCABULARY_QUERIES

    from finexl.collection import search

    families = {}
    for line in (Path(args.index) / "manifest.jsonl").read_text().splitlines():
        row = json.loads(line)
        families[row["id"]] = row["tags"][0]
    records = []
    for family, query in queries.items():
        if family not in families.values():
            continue
        hits = search(args.index, query, top=len(families))
        ranked = [h.id for h in hits]
        rank = next(i for i, h in enumerate(ranked, start=1) if families[h] == family)
        top3 = ", ".join(f"{families[h.id]} x{_scale(args.index, h.id):g} {h.score:.2f}"
                         f"{' (match)' if h.match else ''}" for h in hits[:3])  # fmt: skip
        print(f"{query!r:<34} right family at rank {rank:>2}   top: {top3}")
        records.append({"family": family, "query": query, "rank": rank, "reciprocal_rank": 1 / rank,
                        "top": [{"id": h.id, "family": families[h.id], "score": round(h.score, 4),
                                 "match": h.match} for h in hits[:5]]})  # fmt: skip
    mrr = sum(r["reciprocal_rank"] for r in records) / len(records)
    first = sum(r["rank"] == 1 for r in records)
    print(f"\nmean reciprocal rank {mrr:.3f}; right family first for {first} of {len(records)} queries "
          f"({len(families)} models)")  # fmt: skip
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"mrr": mrr, "first": first, "n_queries": len(records), "n_models": len(families), "queries": records},
                indent=1,
            )
            + "\n"
        )


def _scale(index: str, model_id: str) -> float:
    for line in (Path(index) / "manifest.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row["id"] == model_id:
            return row.get("scale", 1.0)
    return 1.0


if __name__ == "__main__":
    main()
