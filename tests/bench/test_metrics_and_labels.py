"""Benchmark metrics on records with known answers; the label format, its errors and its scorer."""

import json

import numpy as np
import pytest

from finexl.bench.labels import Label, LabelError, labels_from_records, read_labels, score_labels, write_labels
from finexl.bench.metrics import (
    aggregate_units,
    all_metrics,
    compare_methods,
    comparison_table,
    judge_multi_selection,
    judge_top_aspects,
    markdown_table,
    method_metrics,
    metric_units,
    truth_of,
)
from finexl.cli import main
from finexl.errors import InputError

ASPECTS = ("colour", "blur", "size")


def result(scores: dict, changed=(), directions=None, toward=None):
    directions = directions or {}
    toward = toward or {}
    aspects = {
        a: {"score": scores.get(a, 0.0), "interval": [0, 1], "direction": directions.get(a, "increase"),
            "changed": a in changed, "toward": toward.get(a, "x"), "concept": "x", "group": a, "threshold": 0.1}
        for a in ASPECTS
    }  # fmt: skip
    return {"aspects": aspects, "ranking": sorted(ASPECTS, key=lambda a: -aspects[a]["score"])}


def judged(shifts) -> dict:
    """The judge's readings of a model that realized its shifts (0.4 x strength) and nothing else, and its verdicts
    against its null: the shifted aspects moved, the others not."""
    judge = {"colour": {"red": 0.0, "blue": 0.0}, "blur": 0.0, "size": 0.0}
    for aspect, target, strength in shifts:
        if aspect == "colour":
            judge["colour"] = {target: 0.4 * strength, "blue": -0.4 * strength}
        else:
            judge[aspect] = 0.4 * strength * (1 if target == "more" else -1)
    moved = {a: any(a == shift[0] for shift in shifts) for a in ASPECTS}
    return {"judge": judge, "judge_null": {a: 0.05 for a in ASPECTS}, "judge_moved": moved}


def single(aspect, target, level, method_result):
    return {
        "id": f"{aspect}-{level}", "kind": "single", "spec": f"{aspect}={target}@{level / 5:g}", "level": level,
        "shifts": [[aspect, target, level / 5]], "methods": {"m": method_result},
    } | judged([[aspect, target, level / 5]])  # fmt: skip


def perfect_records():
    records = []
    for level in range(1, 6):
        s = level / 10
        records.append(single("colour", "red", level, result({"colour": s}, ["colour"], toward={"colour": "scarlet"})))
        records.append(single("blur", "less", level, result({"blur": s}, ["blur"], {"blur": "decrease"})))
    records.append({"id": "null-0", "kind": "null", "spec": None, "level": 0, "shifts": [],
                    "methods": {"m": result({})}} | judged([]))  # fmt: skip
    for p, (a, b) in enumerate([(0.75, 0.25), (0.25, 0.75)], start=1):
        records.append({
            "id": f"mix-{p}", "kind": "multi", "spec": f"colour=red@{a},blur=less@{b}", "level": p,
            "shifts": [["colour", "red", a], ["blur", "less", b]],
            "methods": {"m": result({"colour": a, "blur": b}, ["colour", "blur"], {"blur": "decrease"},
                                    {"colour": "red"})},
        } | judged([["colour", "red", a], ["blur", "less", b]]))  # fmt: skip
    return records


def test_perfect_explanations_score_perfectly():
    m = method_metrics(perfect_records(), "m")
    assert m["top1"] == 1.0 and m["top3"] == 1.0 and m["direction"] == 1.0
    assert m["level_mae"] == 0.0 and m["spearman_mean"] == pytest.approx(1.0)
    assert m["precision"] == 1.0 and m["recall"] == 1.0 and m["f1"] == 1.0
    assert m["multi_selection"] == 1.0 and m["null_fpr"] == 0.0 and m["retrieval"] == 1.0
    assert m["sentence_f1"] == 1.0
    assert "| m |" in markdown_table(all_metrics(perfect_records(), ["m"]), ["m"])


def test_mistakes_are_counted():
    records = perfect_records()
    records[1]["methods"]["m"] = result({"blur": 0.1, "size": 0.5}, ["blur", "size"], {"blur": "increase"})
    records[-3]["methods"]["m"] = result({"size": 0.3}, ["size"])  # a null reported as changed
    m = method_metrics(records, "m")
    assert m["top1"] == pytest.approx(0.9) and m["direction"] == pytest.approx(0.9)
    assert m["null_fpr"] == pytest.approx(1 / 3)
    assert m["precision"] < 1.0 and m["recall"] < 1.0


def test_a_family_scored_alike_gets_no_level_credit():
    # all five colour models scored 0: ties share the middle rank (|3 - level| averages 1.2), not the input order
    records = [r for r in perfect_records() if r["kind"] == "single" and r["shifts"][0][0] == "colour"]
    for r in records:
        r["methods"]["m"] = result({"colour": 0.0})
    m = method_metrics(records, "m")
    assert m["level_mae"] == pytest.approx(1.2) and m["spearman_mean"] == 0.0


def test_labels_round_trip_and_scoring(tmp_path):
    records = perfect_records()
    for r in records:
        for a, _, _ in r["shifts"]:
            r["judge"][a] = {"red": 0.4} if a == "colour" else -0.2
    assert Label("colour-5", "colour", "increase", 3, "colour=red@1 (spec)") in labels_from_records(records, "spec")
    labels = labels_from_records(records)  # the judge's verdicts: every judged aspect, moved or not
    assert Label("colour-5", "colour", "increase", 3, "judge: red by 0.400") in labels
    assert Label("blur-5", "blur", "decrease", 2, "judge: less by 0.200") in labels
    assert Label("blur-5", "size", "none", 0, "judge: not moved (more by 0.000)") in labels
    assert len(labels) == len(records) * len(ASPECTS)
    assert all(label.level == 0 for label in labels if label.model == "null-0")
    write_labels(tmp_path / "labels.jsonl", labels)
    back = read_labels(tmp_path / "labels.jsonl", list(ASPECTS))
    assert back == labels
    explanations = {r["id"]: {"aspects": [{"aspect": a, **x} for a, x in r["methods"]["m"]["aspects"].items()]}
                    for r in records}  # fmt: skip
    score = score_labels(back, explanations)
    assert score["f1"] == 1.0 and score["direction_accuracy"] == 1.0
    with pytest.raises(LabelError, match="no explanation"):
        score_labels(back, {})


@pytest.mark.parametrize(
    "lines, message",
    [
        (['{"model": "a", "aspect": "lighting", "direction": "increase", "level": 2}'], ":1: unknown aspect"),
        (['{"model": "a", "aspect": "colour", "direction": "increase", "level": 2}'] * 2, ":2: duplicate"),
        (['{"model": "a", "aspect": "colour", "direction": "increase", "level": 2}', "{broken"], ":2: not a JSON"),
        (['{"model": "a", "aspect": "colour", "direction": "up", "level": 2}'], ":1: direction"),
        (['{"model": "a", "aspect": "colour", "direction": "increase", "level": 5}'], ":1: level"),
        (['{"model": "a", "aspect": "colour", "direction": "none", "level": 2}'], ":1: level 0 goes"),
        (['{"model": "a", "aspect": "colour"}'], ":1: needs the fields"),
    ],
)
def test_bad_label_lines_are_named(tmp_path, lines, message):
    path = tmp_path / "labels.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(LabelError, match=message):
        read_labels(path, list(ASPECTS))


def test_cli_score(tmp_path, capsys):
    import shutil
    from pathlib import Path

    from finexl.cli import main

    (tmp_path / "m1").mkdir()  # a whole explanation: every file bench score reads is checked against its schema
    shutil.copy(Path(__file__).parents[1] / "narrate" / "red_explanation.json", tmp_path / "m1" / "explanation.json")
    (tmp_path / "labels.jsonl").write_text(
        '{"model": "m1", "aspect": "colour", "direction": "increase", "level": 2}\n'
    )
    assert main(["bench", "score", str(tmp_path / "labels.jsonl"), str(tmp_path / "m1")]) == 0
    assert "f1" in capsys.readouterr().out
    (tmp_path / "bad.jsonl").write_text('{"model": "m1", "aspect": "glitter", "direction": "increase", "level": 2}\n')
    assert main(["bench", "score", str(tmp_path / "bad.jsonl"), str(tmp_path / "m1")]) == 2
    assert "bad.jsonl:1: unknown aspect" in capsys.readouterr().err


def test_mixture_selection_from_the_judge_shows_what_the_models_realized():
    records = [r for r in perfect_records() if r["kind"] == "multi"]
    # as specified: colour red +0.75 / blur -0.25, then +0.25 / -0.75
    for r, (red, blur) in zip(records, [(0.3, -0.1), (0.1, -0.3)], strict=True):
        r["judge"] = {"colour": {"red": red, "blue": -red}, "blur": blur, "size": 0.0}
    assert judge_multi_selection(records) == 1.0
    assert all_metrics(records, ["m"])["_multi_selection_by_judge"] == 1.0
    records[0]["judge"] = {"colour": {"red": 0.1, "blue": -0.1}, "blur": -0.3, "size": 0.0}  # realized the other
    assert judge_multi_selection(records) == 0.5
    assert judge_multi_selection([r for r in perfect_records() if r["kind"] != "multi"]) is None


def test_top1_against_the_judge_follows_what_really_moved():
    records = [r for r in perfect_records() if r["kind"] == "single"]
    for r in records:  # the judge sees each shifted aspect move most
        a = r["shifts"][0][0]
        r["judge"] = (
            {"colour": {"red": 0.3, "blue": -0.3}, "blur": 0.0, "size": 0.05}
            if a == "colour"
            else {"colour": {"red": 0.0, "blue": 0.0}, "blur": -0.2, "size": 0.05}
        )
    m = all_metrics(records, ["m"])
    assert m["m"]["top1_judge"] == 1.0 and m["_top1_of_judge"] == 1.0
    # a blur LoRA whose side effect on size outgrew its blur change: the judge's top is size, not blur
    records[1]["judge"]["size"] = -0.4
    assert judge_top_aspects(records[1]) == {"size"}
    m = all_metrics(records, ["m"])
    assert m["_top1_of_judge"] == pytest.approx(0.9) and m["m"]["top1_judge"] == pytest.approx(0.9)
    assert m["m"]["top1"] == 1.0  # against the spec the explanation is still right
    # an explanation ranking the side effect first is right against the judge, wrong against the spec
    records[1]["methods"]["m"] = result({"blur": 0.1, "size": 0.5}, ["size"])
    m = all_metrics(records, ["m"])
    assert m["m"]["top1_judge"] == 1.0 and m["m"]["top1"] == pytest.approx(0.9)
    assert judge_top_aspects({"judge": {}}) == frozenset()
    # a tie is read the same in any key order (records written to JSON come back with sorted keys)
    tied = {"judge": {"size": 0.2, "colour": {"red": 0.2, "blue": -0.2}, "blur": 0.1}}
    assert judge_top_aspects(tied) == {"colour", "size"}
    assert judge_top_aspects({"judge": dict(reversed(tied["judge"].items()))}) == {"colour", "size"}


def test_spearman_against_the_judge_follows_the_measured_change():
    records = [r for r in perfect_records() if r["kind"] == "single"]
    # the colour LoRAs realized their levels out of order (L4 moved less than L2), the blur ones in order (decreases)
    realized = {1: 0.05, 2: 0.3, 3: 0.4, 4: 0.2, 5: 0.6}
    for r in records:
        level = r["level"]
        if r["shifts"][0][0] == "colour":
            r["judge"] = {"colour": {"red": realized[level], "blue": -realized[level]}, "blur": 0.0, "size": 0.0}
            r["methods"]["m"]["aspects"]["colour"]["score"] = realized[level] / 2  # follows what was measured
        else:
            r["judge"] = {"colour": {"red": 0.0, "blue": 0.0}, "blur": -0.1 * level, "size": 0.0}
    m = method_metrics(records, "m")
    assert m["spearman_judge"] == {"colour": pytest.approx(1.0), "blur": pytest.approx(1.0)}
    assert m["spearman"]["colour"] == pytest.approx(0.7)  # against the levels the L4 swap costs
    assert m["spearman"]["blur"] == pytest.approx(1.0)
    # a blur LoRA that moved the wrong way (sharper) ranks lowest by the judge: the level-ordered scores lose
    records[-1]["judge"]["blur"] = 0.2
    assert method_metrics(records, "m")["spearman_judge"]["blur"] < 1.0
    assert "spearman_judge" not in method_metrics([{**r, "judge": {}} for r in records], "m")


def test_a_tie_for_closest_earns_the_share_of_the_tied_that_is_right_in_any_aspect_order():
    records = perfect_records()
    mixtures = [r for r in records if r["kind"] == "multi"]
    # an explanation on neither mixed aspect is as close to 75/25 as to 25/75: the two specs tie, and it earns 1/2
    # whichever comes first (the other mixture's explanation is right: 1)
    mixtures[0]["methods"]["m"] = result({"size": 0.4}, ["size"])
    assert method_metrics(records, "m")["multi_selection"] == pytest.approx(0.75)
    # the same records with every explanation's aspects in another order give the same metrics
    shuffled = json.loads(json.dumps(records))
    for r in shuffled:
        x = r["methods"]["m"]
        x["aspects"] = dict(reversed(list(x["aspects"].items())))
    assert method_metrics(shuffled, "m") == method_metrics(records, "m")
    # three single-aspect models with identical score vectors: each ties its two neighbours for nearest
    colour_1, blur_1, colour_2 = [r for r in perfect_records() if r["kind"] == "single"][:3]
    singles = [colour_1, colour_2, blur_1]
    for r in singles:
        r["methods"]["m"] = result({"size": 0.2})
    # colour L1 and L2 each tie the other colour model (right) with blur L1 (wrong): 1/2; blur L1 ties two wrong: 0
    assert method_metrics(singles, "m")["retrieval"] == pytest.approx((0.5 + 0.0 + 0.5) / 3)


def test_families_of_two_suites_are_ranked_apart():
    # the same aspect and levels in two suites: each suite's five levels are one family. Pooled into one family of
    # ten, the step suite's scores (all below the strength suite's) would break the level order.
    records = []
    for suite, offset in (("single", 0.5), ("steps", 0.0)):
        for level in range(1, 6):
            r = single("colour", "red", level, result({"colour": offset + level / 10}, ["colour"]))
            records.append(r | {"suite": suite, "id": f"{suite}-{level}"})
    m = method_metrics(records, "m")
    assert m["level_mae"] == 0.0
    assert m["spearman"] == pytest.approx({"single/colour": 1.0, "steps/colour": 1.0})


def two_methods():
    """Records explained by ``m`` (perfect) and ``w``: right on colour, wrong about blur (size ranked first, blur
    decreases unreported), and a null with one false report."""
    records = perfect_records()
    for r in records:
        r["methods"]["w"] = json.loads(json.dumps(r["methods"]["m"]))
        if r["kind"] == "single" and r["shifts"][0][0] == "blur":
            r["methods"]["w"] = result({"blur": 0.05 * r["level"], "size": 0.5}, ["size"], {"blur": "decrease"})
        if r["kind"] == "null":
            r["methods"]["w"] = result({"size": 0.3}, ["size"])
    return records


def test_units_resampled_once_each_or_twice_each_give_the_metrics():
    records = two_methods()
    for method in ("m", "w"):
        units = metric_units(records, method)
        full = method_metrics(records, method)
        assert aggregate_units(units) == full
        once = {kind: np.arange(len(u)) for kind, u in units.items()}
        twice = {kind: np.repeat(np.arange(len(u)), 2) for kind, u in units.items()}
        expected = {k: v for k, v in full.items() if not isinstance(v, dict)}  # per-aspect dicts only in full
        assert aggregate_units(units, once) == pytest.approx(expected)
        assert aggregate_units(units, twice) == pytest.approx(expected)
    # one family drawn twice, the other not: the metrics of that family alone
    units = metric_units(records, "w")
    blur_only = aggregate_units(units, {"family": np.array([0, 0]), "multi": np.array([0, 1]),
                                        "null": np.array([0]), "dreambooth": np.zeros(0, dtype=int)})  # fmt: skip
    assert units["family"][0]["key"] == "blur" and blur_only["top1"] == 0.0
    assert blur_only["spearman_mean"] == pytest.approx(1.0)


def test_comparison_finds_the_better_method_and_ties_identical_ones():
    records = two_methods()
    comparison = compare_methods(records, ["m", "w"], reference="m", n_resamples=300, seed=1)
    top1 = comparison["columns"]["top1"]
    assert top1["value"] == 1.0 and top1["versus"]["w"]["value"] == 0.5
    # two families, one of them wrong: a quarter of the resamples hold only the colour family (difference 0), a
    # quarter only the blur family (1): one family's difference is not significant
    assert top1["versus"]["w"]["difference"] == 0.5 and top1["versus"]["w"]["verdict"] == "tie"
    assert top1["versus"]["w"]["interval"] == [0.0, 1.0]
    # lower is better for the null false-positive rate: the sign is flipped so that positive favours the reference
    fpr = comparison["columns"]["null_fpr"]["versus"]["w"]
    assert fpr["difference"] == pytest.approx(1 / 3) and fpr["verdict"] == "better"
    # against itself every difference is exactly 0: a tie
    same = compare_methods(records, ["m", "w"], reference="w", n_resamples=50)["columns"]
    assert compare_methods(records, ["w", "m"], reference="w", n_resamples=50)["columns"] == same
    records_twin = [{**r, "methods": {"a": r["methods"]["w"], "b": r["methods"]["w"]}} for r in records]
    twin = compare_methods(records_twin, ["a", "b"], reference="a", n_resamples=50)["columns"]
    assert all(c["versus"]["b"]["verdict"] == "tie" and c["versus"]["b"]["interval"] == [0.0, 0.0]
               for c in twin.values())  # fmt: skip
    # seeded: the same seed gives the same intervals
    again = compare_methods(records, ["m", "w"], reference="m", n_resamples=300, seed=1)
    assert again == comparison
    table = comparison_table(comparison)
    assert "| top1 | 1.000 [" in table and "| null_fpr |" in table
    with pytest.raises(ValueError, match="reference method 'x'"):
        compare_methods(records, ["m", "w"], reference="x")


def test_comparison_calls_a_difference_on_many_units_significant():
    # ten colour families: m ranks each family's colour first, w never; w is significantly worse on top1
    records = []
    for f in range(10):
        for level in range(1, 6):
            r = single("colour", "red", level, result({"colour": level / 10}, ["colour"], toward={"colour": "red"}))
            r["methods"]["w"] = result({"colour": level / 100, "size": 0.2}, [])
            records.append(r | {"suite": f"s{f}", "id": f"s{f}-{level}"})
    comparison = compare_methods(records, ["m", "w"], reference="m", n_resamples=200)
    assert comparison["units"]["family"] == 10
    top1 = comparison["columns"]["top1"]["versus"]["w"]
    assert top1["verdict"] == "better" and top1["interval"] == [1.0, 1.0]
    # no mistake in ordering levels: level MAE ties
    assert comparison["columns"]["level_mae"]["versus"]["w"]["verdict"] == "tie"
    flipped = compare_methods(records, ["m", "w"], reference="w", n_resamples=200)
    assert flipped["columns"]["top1"]["versus"]["m"]["verdict"] == "worse"
    assert "| top1 | 0.000 [0.000, 0.000] | m 1.000 | -1.000 [-1.000, -1.000] | m |" in comparison_table(flipped)


def test_cli_compare(tmp_path, capsys):
    from finexl.cli import main

    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"config": {"methods": ["m", "w"]}, "records": two_methods()}))
    assert main(["bench", "compare", str(path), "--reference", "m", "--resamples", "100",
                 "--json", str(tmp_path / "cmp.json")]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "paired bootstrap over 2 single-aspect families, 2 mixtures, 1 nulls" in out and "| top1 |" in out
    saved = json.loads((tmp_path / "cmp.json").read_text())
    assert saved["reference"] == "m" and saved["resamples"] == 100 and "w" in saved["columns"]["top1"]["versus"]
    assert main(["bench", "compare", str(tmp_path / "missing.json")]) == 2
    assert "benchmark results" in (err := capsys.readouterr().err) and "does not exist" in err
    (tmp_path / "empty.json").write_text(json.dumps({"metrics": {}}))
    assert main(["bench", "compare", str(tmp_path / "empty.json")]) == 2
    assert "holds no per-model records" in capsys.readouterr().err
    assert main(["bench", "compare", str(path)]) == 2  # the default reference, finexl, is not in this file
    assert "reference method 'finexl'" in capsys.readouterr().err
    assert main(["bench", "compare", str(path), "--reference", "m", "--level", "1.5"]) == 2
    assert "--level" in capsys.readouterr().err


def test_dreambooth_records_alone_score_only_dreambooth_recall():
    explained = result({"colour": 0.5}, ["colour"], toward={"colour": "red"})
    subject = {"id": "db", "kind": "dreambooth", "spec": "colour=red@1", "level": 0,
               "shifts": [["colour", "red", 1.0]], "judge": {}, "methods": {"m": explained}}  # fmt: skip
    m = method_metrics([subject], "m")
    assert m == {"dreambooth_recall": 1.0}  # no (aspect, direction) pairs or sentences to score: not 0 or 1
    assert "precision" in method_metrics(perfect_records(), "m")


def test_the_truth_is_what_the_judge_reads_past_its_null(tmp_path, capsys):
    # a blur LoRA that did not realize its shift (blur -0.03, under its null) but made its shapes smaller (size
    # -0.12, past its null of 0.10: a side effect); colour's +0.11 is judge noise (under its null of 0.16) that a
    # fixed 0.10 counts as moved
    r = single("blur", "less", 1, result({"blur": 0.02, "size": 0.3}, ["size"], {"size": "decrease"}))
    r["judge"] = {"colour": {"red": 0.11, "blue": -0.11}, "blur": -0.03, "size": -0.12}
    r["judge_null"] = {"colour": 0.16, "blur": 0.06, "size": 0.10}
    r["judge_moved"] = {"colour": False, "blur": False, "size": True}
    assert truth_of(r) == {"size": "less"}
    assert truth_of(r, "spec") == {"blur": "less"}
    assert truth_of(r, "fixed") == {"colour": "red", "size": "less"}
    by_judge, by_spec, fixed = (method_metrics([r], "m", truth) for truth in ("judge", "spec", "fixed"))
    assert (by_judge["precision"], by_judge["recall"]) == (1.0, 1.0)  # it reported the side effect, and only it
    assert (by_spec["precision"], by_spec["recall"]) == (0.0, 0.0)
    assert (fixed["precision"], fixed["recall"]) == (1.0, 0.5)
    assert by_judge["sentence_f1"] == 1.0 and by_spec["sentence_f1"] == 0.0
    labels = {(label.aspect, label.direction, label.level) for label in labels_from_records([r])}
    assert labels == {("colour", "none", 0), ("blur", "none", 0), ("size", "decrease", 1)}
    assert ("colour", "increase", 1) in {(x.aspect, x.direction, x.level) for x in labels_from_records([r], "fixed")}
    with pytest.raises(ValueError, match="unknown truth 'people'"):
        truth_of(r, "people")

    # records made before the judge had a null: the default names the problem; the spec still scores them
    old = [{k: v for k, v in x.items() if k not in ("judge_null", "judge_moved")} for x in two_methods()]
    with pytest.raises(InputError, match="no judge null"):
        method_metrics(old, "m")
    assert method_metrics(old, "m", "spec")["f1"] == 1.0
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"config": {"methods": ["m", "w"]}, "records": old}))
    assert main(["bench", "compare", str(path), "--reference", "m", "--resamples", "20"]) == 0
    assert "truth: spec" in capsys.readouterr().out  # a file without its truth was made against the spec
    assert main(["bench", "compare", str(path), "--reference", "m", "--truth", "judge"]) == 2
    assert "has no judge null" in capsys.readouterr().err
