"""explain-many, the SQLite index, search and show, on tiny real models; manifests and their bad rows."""

import json
import shutil
import sqlite3

import numpy as np
import pytest

from finexl.cli import main
from finexl.collection import explain_many, rebuild_index, search, show
from finexl.collection.manifest import ManifestError, read_manifest
from finexl.errors import ConfigError, InputError, MissingInputError
from finexl.explanation.pipeline import ExplainConfig
from finexl.sampling import SamplerConfig


def settings(tmp_path, tiny_pipeline_dir, tiny_clip_dir, **kw):
    return ExplainConfig(**{**dict(
        preset="toy", base=str(tiny_pipeline_dir), clip=str(tiny_clip_dir), samples=6, n_bootstrap=20, n_null=20,
        sampler=SamplerConfig(num_inference_steps=2), cache_dir=str(tmp_path / "cache"), report_pairs=2,
    ), **kw})  # fmt: skip


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_manifests_stop_on_duplicates_and_unknown_columns_and_mark_bad_rows(tmp_path):
    (tmp_path / "a.safetensors").write_bytes(b"x")
    m = write_jsonl(tmp_path / "m.jsonl", [{"id": "a", "path": "a.safetensors"}, {"id": "a", "path": "b"}])
    with pytest.raises(ManifestError, match="line 2: id 'a' already on line 1"):
        read_manifest(m)
    m = write_jsonl(tmp_path / "m.jsonl", [{"id": "a", "path": "a.safetensors", "strength": 1}])
    with pytest.raises(ManifestError, match=r"line 1: unknown column\(s\) \['strength'\]"):
        read_manifest(m)
    (tmp_path / "m.csv").write_text("id,path,scale,tags\na,a.safetensors,0.5,red;bold\nb,,1,\nc,nope,1,\n")
    a, b, c = read_manifest(tmp_path / "m.csv")
    assert (a.path, a.scale, a.tags, a.problem) == (str(tmp_path / "a.safetensors"), 0.5, ("red", "bold"), None)
    assert b.problem == "line 3: no path" and c.problem.endswith("nope does not exist")
    (tmp_path / "bad-id.csv").write_text("id,path\nd/x,a\n")  # an id that cannot be a folder name: the schema's
    with pytest.raises(ManifestError, match=r"line 2: id: 'd/x' does not match"):
        read_manifest(tmp_path / "bad-id.csv")
    (tmp_path / "bad.csv").write_text("id,path,weight\n")
    with pytest.raises(ManifestError, match="line 1: unknown column"):
        read_manifest(tmp_path / "bad.csv")
    with pytest.raises(MissingInputError):
        read_manifest(tmp_path / "none.jsonl")


@pytest.fixture
def collection(tmp_path, tiny_pipeline_dir, tiny_clip_dir, tiny_lora_dir):
    shutil.copytree(tiny_lora_dir, tmp_path / "lora")
    (tmp_path / "corrupt.safetensors").write_bytes(b"not a safetensors file")
    manifest = write_jsonl(tmp_path / "manifest.jsonl", [
        {"id": "full", "path": "lora", "tags": ["red"]},
        {"id": "half", "path": "lora", "scale": 0.5},
        {"id": "missing", "path": "nowhere.safetensors"},
        {"id": "corrupt", "path": "corrupt.safetensors"},
        {"id": "nopath"},
    ])  # fmt: skip
    return manifest, settings(tmp_path, tiny_pipeline_dir, tiny_clip_dir)


def test_explain_many_writes_folders_and_index_and_records_failures(tmp_path, collection):
    manifest, cfg = collection
    out = tmp_path / "out"
    result = explain_many(manifest, out, cfg)
    assert sorted(result.explained) == ["full", "half"] and result.skipped == []
    assert sorted(result.failed) == ["corrupt", "missing", "nopath"]
    assert "nowhere.safetensors does not exist" in result.failed["missing"]
    assert sorted(p.name for p in (out / "models").iterdir()) == ["full", "half"]  # no folder for a failure
    for model_id in ("full", "half"):
        folder = out / "models" / model_id
        assert {"explanation.json", "report.html", "embeddings.npz", "samples"} <= {p.name for p in folder.iterdir()}
    with sqlite3.connect(out / "index.sqlite") as conn:
        rows = dict(conn.execute("SELECT id, status FROM models").fetchall())
        stored = conn.execute("SELECT score FROM aspects WHERE model_id = 'full' AND aspect = 'colour'").fetchone()[0]
        vdiv = np.frombuffer(conn.execute("SELECT vdiv FROM models WHERE id = 'full'").fetchone()[0], np.float32)
        tags = json.loads(conn.execute("SELECT tags FROM models WHERE id = 'full'").fetchone()[0])
    assert rows == {"full": "explained", "half": "explained", "missing": "failed", "corrupt": "failed",
                    "nopath": "failed"}  # fmt: skip
    expl = json.loads((out / "models" / "full" / "explanation.json").read_text())
    assert stored == pytest.approx(next(a["score"] for a in expl["aspects"] if a["aspect"] == "colour"))
    with np.load(out / "models" / "full" / "embeddings.npz") as saved:
        np.testing.assert_allclose(vdiv, saved["vdiv"])
    assert tags == ["red"] and expl["sentences"]["text"]
    # the same explanation as a single explain of the same model
    from finexl.explanation.pipeline import explain

    alone = explain(lora=str(tmp_path / "lora"), scale=0.5, config=cfg)
    half = json.loads((out / "models" / "half" / "explanation.json").read_text())
    assert [a["score"] for a in half["aspects"]] == pytest.approx([a.score for a in alone.aspects])


def test_explain_many_resumes_and_redoes_only_what_changed(tmp_path, collection):
    manifest, cfg = collection
    out = tmp_path / "out"
    explain_many(manifest, out, cfg)
    before = (out / "models" / "full" / "explanation.json").read_bytes()
    again = explain_many(manifest, out, cfg)
    assert sorted(again.skipped) == ["full", "half"] and again.explained == []
    assert sorted(again.failed) == ["corrupt", "missing", "nopath"]  # failures are tried again
    assert (out / "models" / "full" / "explanation.json").read_bytes() == before
    # a kill after a folder was written and before its index row: the next run indexes the folder, redoes nothing
    with sqlite3.connect(out / "index.sqlite") as conn:
        conn.execute("DELETE FROM models WHERE id = 'full'")
    third = explain_many(manifest, out, cfg)
    assert "full" in third.skipped and third.explained == []
    # another scale for one model: only that one is redone
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    rows[1]["scale"] = 0.25
    write_jsonl(manifest, rows)
    fourth = explain_many(manifest, out, cfg)
    assert fourth.explained == ["half"] and fourth.skipped == ["full"]


def test_index_rebuild_equals_the_run_and_search_ranks_and_filters(tmp_path, collection, capsys):
    manifest, cfg = collection
    out = tmp_path / "out"
    explain_many(manifest, out, cfg)

    def table(path):
        with sqlite3.connect(path) as conn:
            return sorted(conn.execute("SELECT model_id, aspect, score, low, high, changed FROM aspects").fetchall())

    before = table(out / "index.sqlite")
    (out / "index.sqlite").unlink()
    assert rebuild_index(out) == 2
    assert table(out / "index.sqlite") == before
    hits = search(out, "red")
    assert sorted(h.id for h in hits) == ["full", "half"]
    assert hits == sorted(hits, key=lambda h: (not h.match, -h.score))
    full = next(h for h in hits if h.id == "full")
    assert full.interval[0] <= full.score <= full.interval[1] and full.threshold is not None
    # a stronger scale moves further along the query than a weaker one of the same LoRA
    half = next(h for h in hits if h.id == "half")
    assert abs(full.score) >= abs(half.score)
    assert search(out, "red", filters=["colour>2"]) == []
    with pytest.raises(ConfigError, match="unknown aspect .hue."):
        search(out, "red", filters=["hue=red"])
    assert "full: explained" in show(out, "full") and "error:" in show(out, "missing")
    assert main(["search", "red", "--index", str(tmp_path / "empty")]) == 2
    assert "no index at" in capsys.readouterr().err
    assert main(["show", "nobody", "--index", str(out)]) == 2
    assert "no model 'nobody'" in capsys.readouterr().err


def test_cli_explain_many_summarizes_and_exits_1_on_failures(tmp_path, collection, tiny_pipeline_dir, tiny_clip_dir,
                                                             capsys):  # fmt: skip
    manifest, _ = collection
    argv = ["explain-many", str(manifest), "--out", str(tmp_path / "out"), "--base", str(tiny_pipeline_dir),
            "--preset", "toy", "--clip", str(tiny_clip_dir), "--samples", "4", "--steps", "2", "--bootstrap", "20",
            "--cache", str(tmp_path / "cache"), "--report-pairs", "2", "-q"]  # fmt: skip
    assert main(argv) == 1
    printed = capsys.readouterr().out
    assert "explained 2, skipped 0 (already done), failed 3" in printed and "failed: missing:" in printed
    write_jsonl(manifest, [{"id": "a", "path": "lora"}, {"id": "a", "path": "lora"}])
    assert main(argv) == 2
    assert "line 2: id 'a' already on line 1" in capsys.readouterr().err


def test_move_along_scores_a_known_shift_and_its_null():
    from finexl.collection.search import move_along

    rng = np.random.default_rng(0)
    base = rng.standard_normal((200, 8))
    u = np.eye(8)[0]
    projections = np.concatenate([base @ u, base @ u + 0.5])
    spread = np.quantile(projections, 0.95) - np.quantile(projections, 0.05)
    moved = move_along(base, base + 0.5 * u, base[::-1].copy(), u)
    assert moved["score"] == pytest.approx(0.5 / spread)  # every pair moved 0.5 along u
    assert moved["interval"] == pytest.approx([0.5 / spread] * 2)  # no spread between pairs: no width
    assert moved["threshold"] < moved["score"] and moved["match"]
    still = move_along(base, base + 0.5 * np.eye(8)[1], base[::-1].copy(), u)  # moved along another axis
    assert still["score"] == pytest.approx(0.0) and not still["match"]


def test_a_collection_made_with_the_defaults_is_searchable(tmp_path):
    """Every setting at its default (samples='auto', the toy world): the shipped red LoRA runs to more pairs than
    the same LoRA at scale 0 (no change, settled early), and search still pairs each model with its own pairs."""
    from finexl.utils import data_dir

    manifest = write_jsonl(tmp_path / "m.jsonl", [
        {"id": "red", "path": str(data_dir() / "toy_loras" / "red")},
        {"id": "off", "path": str(data_dir() / "toy_loras" / "red"), "scale": 0.0},
    ])  # fmt: skip
    out = tmp_path / "many"
    result = explain_many(manifest, out, ExplainConfig(cache_dir=str(tmp_path / "cache")), report=False)
    assert sorted(result.explained) == ["off", "red"], result.failed
    with sqlite3.connect(out / "index.sqlite") as conn:
        pairs = dict(conn.execute("SELECT id, n_pairs FROM models").fetchall())
    assert pairs["off"] < pairs["red"], pairs  # the case that crashed search
    hits = search(out, "red")
    assert [h.id for h in hits] == ["red", "off"]
    red, off = hits
    assert red.match and red.score > 0.3 and red.interval[0] > red.threshold
    assert not off.match and abs(off.score) < 0.05
    # the same numbers as scoring the red model's own pairs directly
    with np.load(out / "models" / "red" / "embeddings.npz") as saved:
        tuned = saved["tuned"].astype(np.float64)
    fp = next((out / "bases").iterdir()).name
    with np.load(out / "bases" / fp / "embeddings.npz") as saved:
        base, null = saved["base"].astype(np.float64), saved["null"].astype(np.float64)
    assert len(base) == ExplainConfig().auto_cap
    from finexl.collection.search import move_along, query_direction
    from finexl.explanation.embed import load_embedder
    from finexl.presets import get_preset

    u = query_direction(load_embedder(get_preset("toy").clip), "red", [str(p) for p in np.load(
        out / "bases" / fp / "embeddings.npz")["prompts"]])  # fmt: skip
    n = len(tuned)
    direct = move_along(base[:n], tuned, null[:n], u)
    assert red.score == pytest.approx(direct["score"]) and red.interval == pytest.approx(direct["interval"])
    with pytest.raises(ConfigError, match="tokens"):
        search(out, " ".join(["red"] * 80))
    # a damaged base file: search says so in one line, and the next run (every model skipped) writes it again
    base_file = out / "bases" / fp / "embeddings.npz"
    base_file.write_bytes(base_file.read_bytes()[:200])
    with pytest.raises(InputError, match="damaged"):
        search(out, "red")
    again = explain_many(manifest, out, ExplainConfig(cache_dir=str(tmp_path / "cache")), report=False)
    assert sorted(again.skipped) == ["off", "red"] and again.explained == []
    assert [(h.id, h.score, h.interval) for h in search(out, "red")] == [(h.id, h.score, h.interval) for h in hits]


def test_a_sweep_is_indexed_and_search_filters_on_its_onset(tmp_path, tiny_pipeline_dir, tiny_clip_dir, tiny_lora_dir):
    from finexl.collection.index import connect, put_explained

    shutil.copytree(tiny_lora_dir, tmp_path / "lora")
    manifest = write_jsonl(tmp_path / "manifest.jsonl", [{"id": "full", "path": "lora"}])
    cfg = settings(tmp_path, tiny_pipeline_dir, tiny_clip_dir, scales=[0.5, 1.0])
    out = tmp_path / "out"
    assert explain_many(manifest, out, cfg).explained == ["full"]
    expl = json.loads((out / "models" / "full" / "explanation.json").read_text())
    assert expl["sweep"]["scales"] == [0.5, 1.0] and expl["settings"]["scales"] == [0.5, 1.0]

    def rows():
        with sqlite3.connect(out / "index.sqlite") as conn:
            return dict(conn.execute("SELECT aspect, scores FROM sweep WHERE model_id = 'full'").fetchall())

    assert {a: json.loads(v) for a, v in rows().items()} == {
        a: r["score"] for a, r in expl["sweep"]["aspects"].items()
    }
    before = rows()
    (out / "index.sqlite").unlink()
    assert rebuild_index(out) == 1 and rows() == before
    # the filter keeps a model whose aspect is CHANGED by the scale given: the tiny LoRA's own onsets, then one
    # set to 0.5 in the stored explanation and indexed again
    for aspect, row in expl["sweep"]["aspects"].items():
        kept = [h.id for h in search(out, "red", filters=[f"{aspect}@0.5"])]
        assert kept == (["full"] if row["onset"] is not None and row["onset"] <= 0.5 else [])
    expl["sweep"]["aspects"]["colour"] |= {"changed": [True, True], "onset": 0.5}
    with connect(out / "index.sqlite") as conn:
        digest = conn.execute("SELECT digest FROM models WHERE id = 'full'").fetchone()[0]
        put_explained(conn, {"id": "full", "path": "lora"}, "models/full", digest, expl, np.zeros(4))
    assert [h.id for h in search(out, "red", filters=["colour@0.5"])] == ["full"]
    assert search(out, "red", filters=["colour@0.25"]) == []
    with pytest.raises(ConfigError, match="not a number"):
        search(out, "red", filters=["colour@half"])


def test_a_trigger_leak_is_indexed(tmp_path, tiny_pipeline_dir, tiny_clip_dir, tiny_lora_dir):
    shutil.copytree(tiny_lora_dir, tmp_path / "lora")
    manifest = write_jsonl(tmp_path / "manifest.jsonl", [{"id": "m", "path": "lora"}])
    out = tmp_path / "out"
    explain_many(manifest, out, settings(tmp_path, tiny_pipeline_dir, tiny_clip_dir, trigger="zq"))
    expl = json.loads((out / "models" / "m" / "explanation.json").read_text())
    with sqlite3.connect(out / "index.sqlite") as conn:
        rows = conn.execute("SELECT aspect, trigger, score, changed FROM leak WHERE model_id = 'm'").fetchall()
    assert {a: (t, s, bool(c)) for a, t, s, c in rows} == {
        a: ("zq", r["score"], r["changed"]) for a, r in expl["trigger"]["leak"].items()
    }


def test_manifest_rows_can_be_stacks(tmp_path, tiny_pipeline_dir):
    for name in ("a", "b"):
        (tmp_path / f"{name}.safetensors").write_bytes(b"x")
    m = write_jsonl(tmp_path / "m.jsonl", [
        {"path": ["a.safetensors", "b.safetensors"], "scale": [0.8, 0.6]},
        {"id": "same", "path": ["a.safetensors", "b.safetensors"], "scale": 0.5},
        {"id": "off", "path": ["a.safetensors", "b.safetensors"], "scale": 0},
        {"id": "gone", "path": ["a.safetensors", "nope.safetensors"]},
        {"id": "folder", "path": ["a.safetensors", str(tiny_pipeline_dir)]},
    ])  # fmt: skip
    ab, same, off, gone, folder = read_manifest(m)
    a, b = str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors")
    assert (ab.id, ab.kind, ab.stack, ab.problem, ab.shown_path) == ("a__b", "stack", ((a, 0.8), (b, 0.6)), None,
                                                                     f"{a} + {b}")  # fmt: skip
    assert same.stack == ((a, 0.5), (b, 0.5)) and off.stack == ((a, 0.0), (b, 0.0))
    assert gone.problem.endswith("nope.safetensors does not exist")
    assert folder.problem.endswith("is a fine-tuned pipeline folder: a stack is of LoRAs")
    (tmp_path / "m.csv").write_text("id,path,scale\ns,a.safetensors;b.safetensors,0.8;0.6\none,a.safetensors,0.5\n")
    s, one = read_manifest(tmp_path / "m.csv")
    assert s.stack == ((a, 0.8), (b, 0.6)) and one.stack == () and one.scale == 0.5
    for rows, message in (
        ([{"path": ["a.safetensors", "b.safetensors"], "scale": [1, 1, 1]}], "a stack of 2 LoRAs takes one scale"),
        ([{"path": "a.safetensors", "scale": [1, 1]}], "a list of scales is for a stack"),
        ([{"path": ["a.safetensors"]}], "path"),  # the schema: two or more
    ):
        with pytest.raises(ManifestError, match=message):
            read_manifest(write_jsonl(tmp_path / "bad.jsonl", rows))


def test_a_stack_and_its_interaction_are_indexed_and_searchable(tmp_path, tiny_pipeline_dir, tiny_clip_dir,
                                                                tiny_lora_dir):  # fmt: skip
    shutil.copytree(tiny_lora_dir, tmp_path / "lora")
    shutil.copytree(tiny_lora_dir, tmp_path / "twin")
    manifest = write_jsonl(tmp_path / "manifest.jsonl", [
        {"id": "stack", "path": ["lora", "twin"], "scale": [0.5, 0.5]},
        {"id": "one", "path": "lora"},
    ])  # fmt: skip
    out = tmp_path / "out"
    cfg = settings(tmp_path, tiny_pipeline_dir, tiny_clip_dir, interaction=True)
    assert sorted(explain_many(manifest, out, cfg).explained) == ["one", "stack"]
    stacked = json.loads((out / "models" / "stack" / "explanation.json").read_text())
    single = json.loads((out / "models" / "one" / "explanation.json").read_text())
    assert stacked["settings"]["interaction"] is True and stacked["stack"]["pairs"] == 6
    assert single["settings"]["interaction"] is False and single.get("stack") is None  # a single row: no interaction

    def rows():
        with sqlite3.connect(out / "index.sqlite") as conn:
            return (
                conn.execute("SELECT model_id, position, lora, scale FROM members ORDER BY position").fetchall(),
                conn.execute(
                    "SELECT aspect, verdict, stack, sum, interaction, low, high FROM stack ORDER BY aspect"
                ).fetchall(),
                conn.execute("SELECT path, kind FROM models WHERE id = 'stack'").fetchone(),
            )

    members, table, model = rows()
    lora, twin = str(tmp_path / "lora"), str(tmp_path / "twin")
    assert members == [("stack", 0, lora, 0.5), ("stack", 1, twin, 0.5)] and model == (f"{lora} + {twin}", "stack")
    assert {r[0]: r[1:] for r in table} == {
        a: (r["verdict"], r["stack"], r["sum"], r["interaction"], *r["interval"])
        for a, r in stacked["stack"]["aspects"].items()
    }
    before = rows()
    (out / "index.sqlite").unlink()
    assert rebuild_index(out) == 2 and rows() == before
    # the filter ASPECT:VERDICT keeps the stacks whose interaction on the aspect has that verdict
    for aspect, r in stacked["stack"]["aspects"].items():
        for verdict in ("additive", "none"):
            kept = [h.id for h in search(out, "red", filters=[f"{aspect}:{verdict}"])]
            assert kept == (["stack"] if r["verdict"] == verdict else [])
    with pytest.raises(ConfigError, match="a stack's verdict is one of"):
        search(out, "red", filters=["colour:cancelled"])
    from finexl.explanation.result import format_stack

    assert show(out, "stack").endswith(format_stack(stacked["stack"])) and "LoRA alone" not in show(out, "one")
    # without --interaction the single row is kept, the stack explained again (without its LoRAs alone)
    again = explain_many(manifest, out, settings(tmp_path, tiny_pipeline_dir, tiny_clip_dir))
    assert again.skipped == ["one"] and again.explained == ["stack"]
    assert rows()[1] == [] and rows()[0] == before[0]


def test_a_dreambooth_row_is_explained_on_its_class_prompt_and_searched_against_its_own_base(
    tmp_path, tiny_pipeline_dir, tiny_clip_dir, tiny_lora_dir
):
    from finexl.records import TRAIN_RECORD

    db = shutil.copytree(tiny_lora_dir, tmp_path / "db")
    record = json.loads((db / TRAIN_RECORD).read_text())
    (db / TRAIN_RECORD).write_text(json.dumps(record | {"instance_prompt": "a sks shape", "class_prompt": "a shape"}))
    shutil.copytree(tiny_lora_dir, tmp_path / "lora")
    manifest = write_jsonl(tmp_path / "manifest.jsonl", [{"id": "db", "path": "db"}, {"id": "plain", "path": "lora"}])
    out = tmp_path / "out"
    assert sorted(explain_many(manifest, out, settings(tmp_path, tiny_pipeline_dir, tiny_clip_dir)).explained) == [
        "db", "plain"
    ]  # fmt: skip
    expl = json.loads((out / "models" / "db" / "explanation.json").read_text())
    assert expl["trigger"]["word"] == "sks" and expl["settings"]["prompts"] == ["a shape"]
    with sqlite3.connect(out / "index.sqlite") as conn:
        leak = conn.execute("SELECT aspect, score FROM leak WHERE model_id = 'db'").fetchall()
    assert dict(leak) == {a: r["score"] for a, r in expl["trigger"]["leak"].items()}
    # the DreamBooth model's embeddings file holds its own base's (on "a shape"); the plain one's does not
    with np.load(out / "models" / "db" / "embeddings.npz") as saved:
        assert set(saved.files) == {"tuned", "vdiv", "base", "null"} and len(saved["base"]) == len(saved["tuned"])
        vdiv = saved["vdiv"]
        assert np.allclose(vdiv, (saved["tuned"] - saved["base"]).mean(axis=0), atol=1e-6)
    with np.load(out / "models" / "plain" / "embeddings.npz") as saved:
        assert set(saved.files) == {"tuned", "vdiv"}
    # search scores it along the query over its class prompt, against its own base: the same number as the
    # explanation's own machinery gives for the query as a one-concept move
    hits = {h.id: h for h in search(out, "red")}
    from finexl.collection.search import move_along, query_direction
    from finexl.explanation.embed import load_embedder

    with np.load(out / "models" / "db" / "embeddings.npz") as saved:
        tuned, base, null = (saved[k].astype(np.float64) for k in ("tuned", "base", "null"))
    u = query_direction(load_embedder(str(tiny_clip_dir)), "red", ["a shape"])
    expected = move_along(base, tuned, null, u, n_bootstrap=20, n_null=20, confidence=0.9, null_quantile=0.95, seed=0)
    assert hits["db"].score == pytest.approx(expected["score"]) and hits["db"].interval == pytest.approx(
        expected["interval"]
    )
