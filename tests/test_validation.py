"""Every file finexl reads is checked against its published schema: a NaN, a string or a wrong-typed field in any
of them is one line naming the file and the field, exit 2, and nothing is written. One test per file kind, each
through the command a user runs on it."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from finexl.cli import main
from finexl.utils import data_dir
from finexl.validation import SCHEMAS, SchemaError, fill_schema_tables, schema, validate

ROOT = Path(__file__).resolve().parents[1]
EXPLANATION = ROOT / "tests" / "narrate" / "red_explanation.json"
NAN = float("nan")


def fails_in_one_line(capsys, argv, *needles) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


def test_every_schema_is_valid_and_the_page_is_generated_from_them():
    from jsonschema import Draft202012Validator

    for name in SCHEMAS:
        Draft202012Validator.check_schema(schema(name))
    page = (ROOT / "docs" / "explanation-schema.md").read_text(encoding="utf-8")
    assert fill_schema_tables(page) == page, "run python scripts/schema_docs.py"
    assert "| `aspects[].joint_threshold` | number or null (minimum 0, maximum 1) |" in page
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "schema_docs.py"), "--check"], capture_output=True)
    assert done.returncode == 0


def test_numbers_must_be_finite_and_of_their_type():
    good = {"model": "m", "aspect": "colour", "direction": "increase", "level": 2}
    assert validate(good, "label", "x") == good
    for bad, field in (({**good, "level": NAN}, "level"), ({**good, "level": "2"}, "level"),
                       ({**good, "level": True}, "level"), ({**good, "level": 4}, "level"),
                       ({**good, "model": 3}, "model"), ({**good, "extra": 1}, r"\(the top level\)")):  # fmt: skip
        with pytest.raises(SchemaError, match=f"x: {field}"):
            validate(bad, "label", "x")


@pytest.fixture
def explanation_folder(tmp_path):
    folder = tmp_path / "expl"
    folder.mkdir()
    shutil.copy(EXPLANATION, folder / "explanation.json")
    assert main(["report", str(folder), "-q"]) == 0  # the file as shipped is valid
    return folder


@pytest.mark.parametrize(
    "change, field",
    [
        (lambda e: e["aspects"][0].update(score=NAN), "aspects[0].score"),
        (lambda e: e["aspects"][1].update(score="0.5"), "aspects[1].score"),
        (lambda e: e["aspects"][0].update(changed="yes"), "aspects[0].changed"),
        (lambda e: e["aspects"][2].update(interval=[0.1]), "aspects[2].interval"),
        (lambda e: e["divergence"].update(n_pairs=12.5), "divergence.n_pairs"),
        (lambda e: e["residual"].update(value=float("inf")), "residual.value"),
        (lambda e: e["concepts"][0].update(phrase=None), "concepts[0].phrase"),
        (lambda e: e.update(settings={"confidence": 3}), "settings.confidence"),
        (lambda e: e.pop("aspects"), "aspects"),
    ],
)
def test_a_bad_explanation_is_one_line_in_every_command_that_reads_it(explanation_folder, tmp_path, capsys, change,
                                                                      field):  # fmt: skip
    path = explanation_folder / "explanation.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))  # Python's json writes NaN and Infinity, as a careless tool would
    page = (explanation_folder / "report.html").read_bytes()
    labels = tmp_path / "labels.jsonl"
    labels.write_text(json.dumps({"model": "expl", "aspect": "colour", "direction": "increase", "level": 3}) + "\n")
    for argv in (
        ["report", str(explanation_folder)],
        ["card", str(explanation_folder)],
        ["narrate", str(path)],
        ["bench", "score", str(labels), str(explanation_folder)],
        ["compare", str(explanation_folder), str(explanation_folder), "--out", str(tmp_path / "c.html")],
    ):
        fails_in_one_line(capsys, argv, str(path), field)  # fmt: skip
    assert (explanation_folder / "report.html").read_bytes() == page  # nothing written
    assert not (explanation_folder / "card.md").exists() and not (tmp_path / "c.html").exists()


def test_a_bad_samples_file_is_one_line(explanation_folder, capsys):
    samples = explanation_folder / "samples"
    samples.mkdir()
    (samples / "samples.json").write_text(json.dumps({"prompts": ["a"], "seeds": ["x"], "index": [0]}))
    fails_in_one_line(capsys, ["report", str(explanation_folder)], "samples.json", "seeds[0]")
    (samples / "samples.json").write_text('{"prompts": ["a"], "seeds": [NaN], "index": [0]}')
    fails_in_one_line(capsys, ["report", str(explanation_folder)], "samples.json", "seeds[0]")


@pytest.mark.parametrize(
    "line, field",
    [
        ({"model": "expl", "aspect": "colour", "direction": "increase", "level": NAN}, "level"),
        ({"model": "expl", "aspect": "colour", "direction": "increase", "level": "3"}, "level"),
        ({"model": "expl", "aspect": "colour", "direction": "up", "level": 3}, "direction"),
        ({"model": ["expl"], "aspect": "colour", "direction": "increase", "level": 3}, "model"),
    ],
)
def test_a_bad_label_file_is_one_line_naming_the_line(explanation_folder, tmp_path, capsys, line, field):
    labels = tmp_path / "labels.jsonl"
    good = {"model": "expl", "aspect": "fill", "direction": "increase", "level": 1}
    labels.write_text(json.dumps(good) + "\n" + json.dumps(line) + "\n")
    fails_in_one_line(capsys, ["bench", "score", str(labels), str(explanation_folder)], f"{labels}:2", field)


@pytest.mark.parametrize(
    "rows, needle",
    [
        ([{"id": "a", "path": "toy:red", "scale": NAN}], "line 1: scale"),
        ([{"id": "a", "path": "toy:red", "scale": "half"}], "line 1: scale"),
        ([{"id": "a", "path": "toy:red", "tags": "red"}], "line 1: tags"),
        ([{"id": 5, "path": "toy:red"}], "line 1: id"),
        ([{"id": "a/b", "path": "toy:red"}], "line 1: id"),
        ([{"path": "toy:red"}, {"path": "toy:red", "scale": 0.5}], "line 2: id 'toy-red' already on line 1 (derived"),
        ([{"path": "toy:red"}, {"id": "toy-red", "path": "toy:darker"}], "line 2: id 'toy-red' already on line 1"),
        ([{"scale": 1}], "line 1: no id and no path"),
    ],
)
def test_a_bad_manifest_stops_before_any_work(tmp_path, capsys, rows, needle):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    fails_in_one_line(capsys, ["explain-many", str(manifest), "--out", str(tmp_path / "out")], str(manifest), needle)
    assert not (tmp_path / "out").exists()
    csv = tmp_path / "m.csv"
    csv.write_text("id,path,scale\na,toy:red,half\n")
    fails_in_one_line(capsys, ["explain-many", str(csv), "--out", str(tmp_path / "out")], "line 2: scale")
    assert not (tmp_path / "out").exists()


def test_manifest_ids_are_derived_from_the_path_and_unique(tmp_path):
    from finexl.collection.manifest import read_manifest

    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"path": "toy:red"}) + "\n" + json.dumps({"path": "nowhere/my style.safetensors"})
                        + "\n" + json.dumps({"id": "z", "path": "toy:nothing"}) + "\n")  # fmt: skip
    red, mine, missing = read_manifest(manifest)
    assert (red.id, red.problem, red.path) == ("toy-red", None, str(data_dir() / "toy_loras" / "red"))
    assert mine.id == "my-style" and mine.problem.endswith("does not exist")
    assert missing.id == "z" and missing.problem == "toy:nothing does not exist"


@pytest.mark.parametrize(
    "record, field",
    [({"steps_done": NAN}, "steps_done"), ({"steps_done": "400"}, "steps_done"),
     ({"steps_done": 4, "identity": "f8b1"}, "identity"),
     ({"steps_done": 4, "identity": {"base": 7}}, "identity.base")],
)  # fmt: skip
def test_a_bad_training_record_is_one_line_before_any_image(tmp_path, capsys, record, field):
    lora = shutil.copytree(data_dir() / "toy_loras" / "red", tmp_path / "red")
    (lora / "finexl_train_config.json").write_text(json.dumps(record))
    cache = tmp_path / "cache"
    argv = ["explain", "--lora", str(lora), "--samples", "2", "--cache", str(cache)]
    fails_in_one_line(capsys, argv, "finexl_train_config.json", field)
    assert not list(cache.rglob("*.png"))


@pytest.mark.parametrize(
    "aspects, field",
    [({"colour": {"concepts": [5]}}, "aspects.colour.concepts[0]"),
     ({"colour": {"concepts": ["red"], "group": 3}}, "aspects.colour.group"),
     ({"colour": {"concepts": [{"phrase": "red", "antonym": NAN}]}}, "aspects.colour.concepts[0]")],
)  # fmt: skip
def test_a_bad_concept_bank_is_one_line(tmp_path, capsys, aspects, field):
    bank = tmp_path / "bank.json"
    bank.write_text(json.dumps({"format": "finexl-concepts/1", "name": "b", "aspects": aspects}))
    argv = ["explain", "--lora", "toy:red", "--concepts", str(bank), "--cache", str(tmp_path / "cache")]
    fails_in_one_line(capsys, argv, str(bank), field)


def test_a_bad_failures_file_is_one_line(tmp_path, capsys):
    out = tmp_path / "many"
    (out / "models").mkdir(parents=True)
    (out / "failures.json").write_text(json.dumps({"a": {"entry": {"id": "a"}, "error": NAN}}))
    fails_in_one_line(capsys, ["index", "rebuild", str(out)], "failures.json", "a.error")
    assert not (out / "index.sqlite").exists()


@pytest.mark.parametrize(
    "name, content, needle",
    [("metadata.json", '[{"file": "", "caption": "a shape"}]', "[0].file"),
     ("metadata.jsonl", '{"file_name": "a.png"}\n', "line 1 of"),
     ("metadata.jsonl", '{"file_name": "a.png", "text": "a shape", "caption": 7}\n', "caption")],
)  # fmt: skip
def test_bad_training_captions_are_one_line(tmp_path, capsys, name, content, needle):
    from PIL import Image

    data = tmp_path / "data"
    data.mkdir()
    Image.new("RGB", (8, 8), (200, 0, 0)).save(data / "a.png")
    (data / name).write_text(content)
    argv = ["train", "lora", "--data", str(data), "--out", str(tmp_path / "out"), "--max-steps", "1"]
    fails_in_one_line(capsys, argv, name, needle)
    assert not (tmp_path / "out" / "pytorch_lora_weights.safetensors").exists()


def test_a_bad_checkpoint_state_is_one_line(tmp_path):
    from finexl.train.checkpoint import CheckpointError, load_checkpoint

    folder = tmp_path / "checkpoint-000002"
    folder.mkdir()
    for state in ('{"step": NaN}', '{"step": "2"}', '{"identity": {}}'):
        (folder / "state.json").write_text(state)
        with pytest.raises(CheckpointError, match=r"state.json: .*step|'step' is a required") as info:
            load_checkpoint(folder)
        assert "\n" not in str(info.value)


def test_a_bad_truth_record_is_one_line(tmp_path):
    from finexl.bench.runner import load_truths
    from finexl.bench.suites import suite_models

    model = suite_models("quick")[0]
    folder = tmp_path / "quick" / "models" / model.id
    folder.mkdir(parents=True)
    (folder / "pytorch_lora_weights.safetensors").write_bytes(b"")
    (folder / "truth.json").write_text(json.dumps({"id": model.id, "kind": 3}))
    with pytest.raises(SchemaError, match=r"truth.json: kind: 3 is not of type 'string'"):
        load_truths(tmp_path, ["quick"])


def test_bad_benchmark_results_are_one_line(tmp_path, capsys):
    good = ROOT / "docs" / "results" / "bench.json"
    data = json.loads(good.read_text())
    first = data["records"][0]
    aspect = next(iter(first["methods"]["finexl"]["aspects"]))
    first["methods"]["finexl"]["aspects"][aspect]["score"] = NAN
    bad = tmp_path / "bench.json"
    bad.write_text(json.dumps(data))
    fails_in_one_line(capsys, ["bench", "compare", str(bad)], str(bad), f"records[0].methods.finexl.aspects.{aspect}")
