"""The faithfulness checker on the adversarial sentence set: how many unfaithful texts it lets through, and how many
faithful ones it wrongly rejects.

    python scripts/measure_faithfulness.py [--json docs/results/faithfulness.json]

Each item of ``tests/narrate/adversarial_sentences.jsonl`` is checked inside a whole narration of the shipped red
LoRA's explanation (``tests/narrate/red_explanation.json``): the templated lines of its three CHANGED aspects, with
the item replacing the line of the aspect it names (``replaces``) or added to them. Prints, per kind, the share
accepted, and the precision and recall of "accepted" as a prediction of "faithful".
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from finexl.narrate.faithfulness import check
from finexl.narrate.templates import aspect_sentence

ROOT = Path(__file__).resolve().parents[1]
ITEMS = ROOT / "tests" / "narrate" / "adversarial_sentences.jsonl"
EXPLANATION = ROOT / "tests" / "narrate" / "red_explanation.json"


def narration(expl: dict, item: dict) -> str:
    lines = {a["aspect"]: aspect_sentence(a) for a in expl["aspects"] if a["changed"]}
    if item["replaces"]:
        lines[item["replaces"]] = item["text"]
        return "\n".join(lines.values())
    return "\n".join([*lines.values(), item["text"]])


def evaluate() -> dict:
    expl = json.loads(EXPLANATION.read_text())
    items = [json.loads(line) for line in ITEMS.read_text().splitlines() if line.strip()]
    by_kind: dict[str, list[bool]] = defaultdict(list)
    rows = []
    for item in items:
        report = check(narration(expl, item), expl)
        by_kind[item["kind"]].append(report.ok)
        rows.append({**item, "accepted": report.ok, "problems": report.problems})
    faithful = [r for r in rows if r["faithful"]]
    accepted = [r for r in rows if r["accepted"]]
    true_accepts = sum(r["faithful"] for r in accepted)
    return {
        "items": len(rows),
        "faithful": len(faithful),
        "unfaithful accepted": len(accepted) - true_accepts,
        "faithful accepted": true_accepts,
        "precision": true_accepts / len(accepted) if accepted else 1.0,
        "recall": true_accepts / len(faithful) if faithful else 1.0,
        "accepted by kind": {k: f"{sum(v)}/{len(v)}" for k, v in by_kind.items()},
        "rows": rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json")
    args = ap.parse_args()
    result = evaluate()
    for key in ("items", "faithful", "unfaithful accepted", "faithful accepted", "precision", "recall"):
        value = result[key]
        print(f"{key:<20} {value:.3f}" if isinstance(value, float) else f"{key:<20} {value}")
    for kind, share in result["accepted by kind"].items():
        print(f"  accepted, {kind:<10} {share}")
    for row in result["rows"]:
        if row["accepted"] != row["faithful"]:
            print(f"  WRONG ({'accepted' if row['accepted'] else 'rejected'}): {row['text']}  {row['problems']}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
