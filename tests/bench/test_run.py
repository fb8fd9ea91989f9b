"""`finexl bench run` end to end on a tiny suite of real toy LoRAs; a suite missing a model is reported."""

import json
import shutil

import pytest

import finexl.bench.suites as suites
from finexl.bench.suites import BuildConfig, build_suite
from finexl.cli import main


@pytest.fixture
def tiny_suite(tmp_path, monkeypatch):
    monkeypatch.setitem(suites.SUITES, "tiny", lambda: suites.single_aspect_models((("colour", "red"),), (1.0,))
                        + suites.null_models(1))  # fmt: skip
    build_suite("tiny", tmp_path / "suites" / "tiny", BuildConfig(n_images=8, max_steps=2), progress=False)
    return tmp_path


def test_bench_run_prints_the_table_and_writes_records(tiny_suite, capsys):
    out = tiny_suite
    argv = ["bench", "run", "tiny", "--suites", str(out / "suites"), "--samples", "4", "--bootstrap", "10",
            "--cache", str(out / "cache"), "--json", str(out / "bench.json"), "--labels", str(out / "labels.jsonl"),
            "--methods", "finexl,paper,visdiff", "-q"]  # fmt: skip
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0] == (
        "precision, recall and F1 against: the aspects the judge reads moving past its own null (95 %)"
    )
    assert table.splitlines()[1].startswith("| method | level_mae")
    assert [line.split("|")[1].strip() for line in table.splitlines()[3:6]] == ["finexl", "paper", "visdiff"]
    result = json.loads((out / "bench.json").read_text())
    assert result["config"]["truth"] == "judge"
    # each record holds the judge's null per aspect, and "moved" is its change clearing it
    from finexl.bench.metrics import judge_change

    for r in result["records"]:
        assert set(r["judge_null"]) == set(r["judge_moved"]) == set(r["judge"])
        for a, reading in r["judge"].items():
            assert r["judge_moved"][a] == (judge_change(reading)[0] > r["judge_null"][a]) and r["judge_null"][a] > 0
    labels = [json.loads(line) for line in (out / "labels.jsonl").read_text().splitlines()]
    assert len(labels) == sum(len(r["judge"]) for r in result["records"])  # every judged aspect of every model
    moved = {(r["id"], a) for r in result["records"] for a, m in r["judge_moved"].items() if m}
    assert {(x["model"], x["aspect"]) for x in labels if x["level"] > 0} == moved
    assert [r["id"] for r in result["records"]] == ["colour-red-L1", "null-0"]
    assert {k for k in result["metrics"] if not k.startswith("_")} == {"finexl", "paper", "visdiff"}
    # the judge read the one single-aspect model: top-1 against it is scored, and the judge's own top-1 reported
    assert 0.0 <= result["metrics"]["_top1_of_judge"] <= 1.0
    assert result["metrics"]["finexl"]["top1_judge"] in (0.0, 1.0)
    assert "top1 made from the judge's readings" in table
    # the paired bootstrap against the other methods, printed and saved
    assert "finexl against the other methods, paired bootstrap" in table and "| top1 | " in table
    assert set(result["comparison"]["columns"]["top1"]["versus"]) == {"paper", "visdiff"}
    # finexl's records keep its joint fit's score (CHANGED needs that fit too); one-part methods have none
    first = result["records"][0]["methods"]
    assert all(0.0 <= a["joint_score"] <= 1.0 for a in first["finexl"]["aspects"].values())
    assert not any("joint_score" in a for a in first["paper"]["aspects"].values())
    assert result["records"][0]["shifts"] == [["colour", "red", 1.0]]
    assert (out / "labels.jsonl").read_text().count("\n") > 1

    shutil.rmtree(out / "suites" / "tiny" / "models" / "null-0")
    assert main(argv) == 2
    assert "null-0 is missing" in capsys.readouterr().err


def test_bench_run_refuses_models_trained_on_another_base(tiny_suite, capsys):
    out = tiny_suite
    config = out / "suites" / "tiny" / "models" / "colour-red-L1" / "finexl_train_config.json"
    record = json.loads(config.read_text())
    record["identity"]["base"] = "0123456789abcdef"
    config.write_text(json.dumps(record))
    argv = ["bench", "run", "tiny", "--suites", str(out / "suites"), "--samples", "4", "--bootstrap", "10",
            "--cache", str(out / "cache"), "--methods", "finexl", "-q"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "colour-red-L1" in err and "trained on base 0123456789abcdef" in err and "rebuild the suite" in err


def test_bench_run_samples_scale_levels_at_their_scale(tmp_path, monkeypatch):
    # one LoRA at scale 0 (exactly the base) and 1: a runner that ignored the scale would sample both alike
    family = suites.scale_level_models((("colour", "red"),), (0.0, 1.0))
    monkeypatch.setitem(suites.SUITES, "tiny-scale", lambda: family)
    build_suite("tiny-scale", tmp_path / "suites" / "tiny-scale", BuildConfig(n_images=8, max_steps=2), progress=False)
    argv = ["bench", "run", "tiny-scale", "--suites", str(tmp_path / "suites"), "--samples", "4", "--bootstrap",
            "10", "--cache", str(tmp_path / "cache"), "--json", str(tmp_path / "bench.json"), "--methods", "gsclip",
            "-q"]  # fmt: skip
    assert main(argv) == 0
    off, on = json.loads((tmp_path / "bench.json").read_text())["records"]
    assert all(x["score"] == 0.0 for x in off["methods"]["gsclip"]["aspects"].values())
    assert any(x["score"] > 0.0 for x in on["methods"]["gsclip"]["aspects"].values())
