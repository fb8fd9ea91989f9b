"""Raters' labels merged (checks, agreement, consensus), the sentences' claims, and explanations scored against
people beside the raters' ceiling. The page itself is tested in a browser: tests/report/test_label_browser.py."""

import json

import numpy as np
import pytest

from finexl.bench.agreement import agreement, merge
from finexl.bench.labels import (
    Label,
    consensus_of,
    rater_ceiling,
    read_labels,
    score_against_people,
    write_labels,
)
from finexl.cli import main
from finexl.narrate.faithfulness import Claim, claims
from finexl.narrate.templates import render

TASK = "t0"
UNITS = [(m, a) for m in ("m1", "m2", "m3") for a in ("colour", "blur")]


def rater_file(path, rater, answers, task=TASK):
    """answers: {(model, aspect): signed level}"""
    labels = [
        Label(m, a, {1: "increase", -1: "decrease"}.get(int(np.sign(v)), "none"), abs(v), "", rater, task)
        for (m, a), v in answers.items()
    ]
    write_labels(path, labels)
    return path


def test_consensus_is_the_majority_with_ties_marked():
    assert consensus_of({"a": 2, "b": 2, "c": 0}) == (2, False)
    assert consensus_of({"a": 2, "b": 0}) == (0, True)  # changed or not split evenly: a tie, read as no change
    assert consensus_of({"a": 0, "b": 0, "c": 3}) == (0, False)
    assert consensus_of({"a": 1, "b": 3, "c": -2}) == (2, False)  # two say increase; the median of 1 and 3
    assert consensus_of({"a": 1, "b": 2, "c": 0}) == (1, True)  # a median between two levels: rounded down, marked
    assert consensus_of({"a": 2, "b": -2, "c": 1, "d": -1}) == (0, True)  # increase and decrease split evenly


def test_agreement_values_on_known_cases():
    same = np.array([[3, 0, -2, 1, 0, 2], [3, 0, -2, 1, 0, 2]], dtype=float)
    a = agreement(same, n_resamples=200)
    assert a["alpha"]["value"] == pytest.approx(1.0) and a["kappa"]["value"] == pytest.approx(1.0)
    # two raters, four units: agree on two, disagree on two, half the answers "changed": Fleiss' kappa is 0
    half = np.array([[1, 0, 1, 0], [1, 0, 0, 1]], dtype=float)
    assert agreement(half, n_resamples=50)["kappa"]["value"] == pytest.approx(0.0, abs=1e-12)
    # independent raters over many units: alpha near 0, with an interval that holds it
    rng = np.random.default_rng(0)
    random = rng.integers(-3, 4, size=(3, 300)).astype(float)
    r = agreement(random, n_resamples=300)["alpha"]
    assert abs(r["value"]) < 0.1 and r["interval"][0] < 0 < r["interval"][1]
    # a rater who leaves answers out (NaN) is still counted where two raters answered
    gaps = same.copy()
    gaps[1, :2] = np.nan
    assert agreement(gaps, n_resamples=50)["alpha"]["value"] == pytest.approx(1.0)


def test_merge_checks_every_file_and_writes_the_consensus(tmp_path, capsys):
    full = {u: v for u, v in zip(UNITS, [3, 0, 0, -1, 2, 0], strict=True)}
    a = rater_file(tmp_path / "a.jsonl", "alice", full)
    b = rater_file(tmp_path / "b.jsonl", "bob", {**full, ("m2", "blur"): -2})
    part = dict(list(full.items())[:4])
    c = rater_file(tmp_path / "c.jsonl", "carol", part)  # an unfinished export: accepted, its gaps counted
    merged = merge([a, b, c], UNITS, n_resamples=100)
    assert merged.raters == ["alice", "bob", "carol"] and merged.missing == {"alice": 0, "bob": 0, "carol": 2}
    by = {(x.model, x.aspect): x for x in merged.consensus}
    assert by[("m1", "colour")].signed == 3 and by[("m1", "colour")].raters == 3
    assert by[("m2", "blur")].signed == -1 and by[("m2", "blur")].votes == {"alice": -1, "bob": -2, "carol": -1}
    assert by[("m3", "colour")].raters == 2 and by[("m3", "colour")].signed == 2
    assert set(merged.agreement) == {"overall", "colour", "blur"}
    # the command: agreement with intervals printed, the consensus written and read back
    out = tmp_path / "consensus.jsonl"
    task = tmp_path / "task"
    task.mkdir()
    (task / "task.json").write_text(
        json.dumps({"task": TASK, "models": [{"id": m, "aspects": ["colour", "blur"]} for m in ("m1", "m2", "m3")]})
    )
    assert main(["label", "merge", str(a), str(b), str(c), "--task", str(task), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "carol left 2 of 6 unanswered" in printed and "alpha (ordinal), 95%" in printed
    assert "overall" in printed and "[" in printed.split("overall", 1)[1]  # an interval beside the value
    back = read_labels(out)
    assert [(x.model, x.aspect, x.signed, x.raters) for x in back] == [
        (x.model, x.aspect, x.signed, x.raters) for x in merged.consensus
    ]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda lines: lines[:1] + [dict(lines[1], task="other")] + lines[2:], "b.jsonl:2: rater 'bob' of task"),
        (lambda lines: [dict(x, rater="alice") for x in lines], "rater 'alice' again"),
        (lambda lines: lines + [dict(lines[0], model="m9")], "b.jsonl:7: model 'm9', aspect 'colour' is not in"),
        (lambda lines: [dict(lines[0], level=4)] + lines[1:], "b.jsonl:1"),
        (lambda lines: [dict(lines[0], level="2")] + lines[1:], "b.jsonl:1"),
        (lambda lines: [dict(lines[0], direction="sideways")] + lines[1:], "b.jsonl:1"),
        (lambda lines: lines + [lines[0]], "b.jsonl:7: duplicate label"),
        (lambda lines: [{k: v for k, v in x.items() if k != "rater"} for x in lines], "needs 'rater' and 'task'"),
    ],
)
def test_a_bad_file_is_one_line_naming_file_and_line_and_nothing_is_written(tmp_path, capsys, change, message):
    full = {u: 1 for u in UNITS}
    a = rater_file(tmp_path / "a.jsonl", "alice", full)
    b = rater_file(tmp_path / "b.jsonl", "bob", full)
    lines = [json.loads(x) for x in b.read_text().splitlines()]
    b.write_text("".join(json.dumps(x) + "\n" for x in change(lines)))
    task = tmp_path / "task.json"
    task.write_text(
        json.dumps({"task": TASK, "models": [{"id": m, "aspects": ["colour", "blur"]} for m in ("m1", "m2", "m3")]})
    )
    out = tmp_path / "consensus.jsonl"
    assert main(["label", "merge", str(a), str(b), "--task", str(task), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def explanation(changed: dict[str, tuple[str, float]]) -> dict:
    aspects = []
    for name, concept, antonym in (("colour", "red", None), ("blur", "blurry", "sharp"), ("size", "large", "small")):
        direction, score = changed.get(name, ("increase", 0.05))
        aspects.append(
            {
                "aspect": name,
                "group": "g",
                "score": score,
                "interval": [score - 0.02, score + 0.02],
                "direction": direction,
                "concept": concept,
                "toward": antonym if direction == "decrease" else concept,
                "threshold": 0.1,
                "changed": name in changed,
            }
        )
    return {
        "aspects": aspects,
        "concepts": [
            {"phrase": "red", "antonym": None, "aspect": "colour"},
            {"phrase": "blurry", "antonym": "sharp", "aspect": "blur"},
            {"phrase": "large", "antonym": "small", "aspect": "size"},
        ],
    }


def test_the_claims_of_templated_and_free_sentences():
    expl = explanation({"colour": ("increase", 0.6), "blur": ("decrease", 0.3)})
    said = claims(render(expl, "bullets"), expl)
    assert said == {"colour": Claim("increase", 3), "blur": Claim("decrease", 2)}
    free = "The objects turn slightly red. Images are strongly sharper, toward sharp. Size is unchanged."
    assert claims(free, expl) == {
        "colour": Claim("increase", 1),
        "blur": Claim("decrease", 3),
        "size": Claim("none", 0),
    }
    assert claims("Colour does not change.", expl) == {"colour": Claim("none", 0)}


def test_scores_and_sentences_against_a_consensus_beside_the_raters_ceiling():
    expls = {"m1": explanation({"colour": ("increase", 0.6)}), "m2": explanation({"blur": ("decrease", 0.3)})}
    expls["m2"]["sentences"] = {"text": "- blur: strongly more blurry", "source": "llm"}  # wrong direction
    expls["m1"]["sentences"] = {"text": "- colour: strongly more red", "source": "llm"}
    votes = {
        ("m1", "colour"): {"a": 3, "b": 3, "c": 2, "d": 3},
        ("m1", "blur"): {"a": 0, "b": 0, "c": 0, "d": 0},
        ("m2", "colour"): {"a": 0, "b": 1, "c": 0, "d": 0},
        ("m2", "blur"): {"a": -2, "b": -2, "c": 0, "d": -2},
    }
    labels = []
    for (m, a), v in votes.items():
        signed, tie = consensus_of(v)
        labels.append(
            Label(
                m,
                a,
                {1: "increase", -1: "decrease"}.get(int(np.sign(signed)), "none"),
                abs(signed),
                "",
                None,
                TASK,
                len(v),
                tie,
                v,
            )
        )
    result = score_against_people(labels, expls)
    overall = result["scores"]["overall"]
    assert (overall["precision"], overall["recall"], overall["f1"]) == (1.0, 1.0, 1.0)
    assert result["sentences"]["template"]["overall"]["f1"] == 1.0
    llm = result["sentences"]["llm"]["overall"]
    assert llm["precision"] == 0.5 and llm["recall"] == 0.5  # m2's sentence says the wrong direction
    ceiling = result["ceiling"]["overall"]
    # each rater against the other three's consensus: b says colour changed on m2 (a false positive), c misses
    # m2's blur (half its recall); a and d agree with the others everywhere
    assert ceiling["recall"] == pytest.approx((1 + 1 + 0.5 + 1) / 4)
    assert ceiling["precision"] == pytest.approx((1 + 2 / 3 + 1 + 1) / 4)
    assert result["ceiling"]["blur"]["recall"] == pytest.approx((1 + 1 + 0 + 1) / 4)
    assert result["ceiling"]["blur"]["precision"] == pytest.approx(1.0)  # c said no blur change: left out
    assert rater_ceiling([Label("m", "colour", "none", 0)]) is None  # no votes: no ceiling


def test_a_task_of_an_explain_many_folder_and_of_single_folders(red_folder, tmp_path):
    import shutil

    from finexl.bench.labeling import explained_folders, make_task, read_task
    from finexl.errors import InputError

    many = tmp_path / "many"
    for name in ("a", "b"):
        shutil.copytree(red_folder, many / "models" / name)
    assert [m for m, _ in explained_folders([many])] == ["a", "b"]
    with pytest.raises(InputError, match="two explanations are for model 'a'"):
        explained_folders([many, many / "models" / "a"])
    page = make_task([many], tmp_path / "task", pairs=2)
    digest, units = read_task(tmp_path / "task")
    bank = json.loads((red_folder / "explanation.json").read_text())["concept_bank"]["aspects"]
    assert units == [(m, a) for m in ("a", "b") for a in bank]
    html = page.read_text()
    assert digest in html and html.count("data:image/png;base64,") == 2 * 2 * 2  # 2 models x 2 pairs x 2 images
    assert '"changed"' not in html and "CHANGED" not in html  # the explanation's verdicts are not shown
    with pytest.raises(InputError, match="exists"):
        make_task([many], tmp_path / "task")
    # another selection of pairs is another task
    make_task([many], tmp_path / "task3", pairs=3)
    assert read_task(tmp_path / "task3")[0] != digest
