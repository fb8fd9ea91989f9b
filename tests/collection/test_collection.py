"""explain-many, the SQLite index, search and show, on tiny real models; manifests and their bad rows."""

import json
import shutil
import sqlite3

import numpy as np
import pytest

from finexl.cli import main
from finexl.collection import explain_many, rebuild_index, search, show
from finexl.collection.manifest import ManifestError, read_manifest
from finexl.errors import ConfigError, MissingInputError
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
    (tmp_path / "m.csv").write_text("id,path,scale,tags\na,a.safetensors,0.5,red;bold\nb,,1,\nc,nope,1,\nd/x,a,1,\n")
    a, b, c, d = read_manifest(tmp_path / "m.csv")
    assert (a.path, a.scale, a.tags, a.problem) == (str(tmp_path / "a.safetensors"), 0.5, ("red", "bold"), None)
    assert b.problem == "line 3: no path" and c.problem.endswith("nope does not exist")
    assert "must be letters" in d.problem
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
