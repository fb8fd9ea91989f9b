"""The faithfulness check on adversarial sentences about the shipped red LoRA's explanation (issue 24, kind 4)."""

import json
from pathlib import Path

import pytest

from finexl.narrate.faithfulness import check
from finexl.narrate.templates import aspect_sentence

HERE = Path(__file__).parent


@pytest.mark.parametrize("name", ["adversarial_sentences.jsonl", "adversarial_heldout.jsonl"])
def test_no_unfaithful_sentence_passes_and_faithful_ones_do(name):
    expl = json.loads((HERE / "red_explanation.json").read_text())
    items = [json.loads(line) for line in (HERE / name).read_text().splitlines() if line.strip()]
    template = {a["aspect"]: aspect_sentence(a) for a in expl["aspects"] if a["changed"]}
    assert check("\n".join(template.values()), expl).ok  # the template itself is faithful
    wrongly_accepted, faithful_accepted = [], 0
    for item in items:
        lines = dict(template)
        if item["replaces"]:
            lines[item["replaces"]] = item["text"]
        text = "\n".join(lines.values()) if item["replaces"] else "\n".join([*lines.values(), item["text"]])
        ok = check(text, expl).ok
        if ok and not item["faithful"]:
            wrongly_accepted.append(item["text"])
        faithful_accepted += ok and item["faithful"]
    n_faithful = sum(i["faithful"] for i in items)
    assert wrongly_accepted == []
    assert faithful_accepted >= 0.9 * n_faithful, (faithful_accepted, n_faithful)
