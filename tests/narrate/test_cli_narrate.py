"""Sentences from the command line: explain prints them, narrate re-renders a saved explanation, VLM proposals."""

import json

from finexl.cli import main


def test_explain_with_vlm_proposals_and_llm_sentences(tmp_path, tiny_pipeline_dir, tiny_clip_dir, tiny_lora_dir,
                                                      chat_server, capsys):  # fmt: skip
    argv = ["explain", "--lora", str(tiny_lora_dir), "--base", str(tiny_pipeline_dir), "--clip", str(tiny_clip_dir),
            "--preset", "toy", "--samples", "4", "--steps", "2", "--bootstrap", "20",
            "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "out"), "-q",
            "--vlm-endpoint", chat_server.url, "--vlm-model", "vlm", "--vlm-pairs", "2",
            "--llm-endpoint", chat_server.url, "--llm-model", "error"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    expl = json.loads((tmp_path / "out" / "explanation.json").read_text())
    proposed = [p["phrase"] for p in expl["concept_bank"]["proposed"]]
    assert proposed == ["more saturated colours", "red tint", "striped background"]
    assert "proposed" in expl["concept_bank"]["aspects"]
    assert expl["sentences"]["source"] == "template" and "HTTP 500" in expl["sentences"]["note"]
    assert "note: LLM failed" in out

    path = str(tmp_path / "out" / "explanation.json")
    assert main(["narrate", path, "--format", "summary", "--aspects", "proposed"]) == 0
    said = capsys.readouterr().out.strip()
    assert said.startswith(("Changed:", "No significant change")) and "proposed" in said
    assert main(["narrate", path, "--aspects", "lighting"]) == 2
    assert "unknown aspect" in capsys.readouterr().err
    assert main(["narrate", str(tmp_path / "missing.json")]) == 2
    assert "does not exist" in capsys.readouterr().err
    failing = [*argv[: argv.index("--vlm-model") + 1], "error", "--overwrite"]
    assert main(failing) == 0  # a VLM that answers nothing: the explanation completes without proposals
    expl = json.loads((tmp_path / "out" / "explanation.json").read_text())
    assert expl["concept_bank"]["proposed"] == [] and "HTTP 500" in expl["concept_bank"]["proposal_note"]
    (tmp_path / "bad.json").write_text("{}")
    assert main(["narrate", str(tmp_path / "bad.json")]) == 2
    assert "'method' is a required property" in capsys.readouterr().err


def test_a_dropping_chat_server_loses_nothing_and_no_secret_is_saved(tmp_path, tiny_pipeline_dir, tiny_clip_dir,
                                                                     tiny_lora_dir, chat_server, capsys):  # fmt: skip
    host = chat_server.url.replace("http://", "")
    argv = ["explain", "--lora", str(tiny_lora_dir), "--base", str(tiny_pipeline_dir), "--clip", str(tiny_clip_dir),
            "--preset", "toy", "--samples", "4", "--steps", "2", "--bootstrap", "20",
            "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "out"), "-q",
            "--vlm-endpoint", f"http://bob:hunter2@{host}", "--vlm-model", "drop", "--vlm-pairs", "2",
            "--llm-endpoint", f"http://bob:hunter2@{host}", "--llm-model", "drop", "--llm-timeout", "5"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr()
    saved = (tmp_path / "out" / "explanation.json").read_text()
    expl = json.loads(saved)
    assert expl["sentences"]["source"] == "template" and "LLM failed" in expl["sentences"]["note"]
    assert "VLM proposals failed" in expl["concept_bank"]["proposal_note"]
    assert "hunter2" not in saved and "hunter2" not in printed.out + printed.err
    assert expl["settings"]["vlm_endpoint"] == f"http://***@{host}"
