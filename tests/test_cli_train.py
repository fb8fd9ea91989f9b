"""``finexl train`` and ``finexl toyworld measure`` in-process, on tiny pipelines and small data."""

import json

import pytest

from finexl.cli import main
from finexl.loading import LORA_WEIGHTS_NAME


@pytest.fixture(scope="module")
def red_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("red") / "data"
    assert (
        main(["toyworld", "personalization", "--shift", "colour=red@0.8", "--n", "12", "--out", str(out), "-q"]) == 0
    )
    return out


def train_argv(data, base, out, *extra):
    return ["train", "lora", "--data", str(data), "--base", str(base), "--out", str(out), "--max-steps", "3",
            "--batch-size", "4", "--lr-warmup-steps", "1", "-q", *extra]  # fmt: skip


def test_train_lora_then_measure(red_data, tiny_pipeline_dir, tmp_path, capsys):
    out = tmp_path / "lora"
    assert main(train_argv(red_data, tiny_pipeline_dir, out, "--rank", "2", "--alpha", "4")) == 0
    assert "trained 3 steps" in capsys.readouterr().out
    record = json.loads((out / "finexl_train_config.json").read_text())
    assert record["rank"] == 2 and record["alpha"] == 4.0 and record["steps_done"] == 3
    report = tmp_path / "measure.json"
    argv = ["toyworld", "measure", "--lora", str(out), "--base", str(tiny_pipeline_dir), "--n", "4", "--steps", "2",
            "--json", str(report), "-q"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "colour" in printed and "total variation" in printed
    result = json.loads(report.read_text())
    assert result["n"] == 4 and set(result["categorical"]["colour"]["base"]) >= {"red", "blue"}
    assert abs(sum(result["categorical"]["colour"]["tuned"].values()) - 1.0) < 1e-9


def test_train_lora_refuses_to_clobber_and_resumes(red_data, tiny_pipeline_dir, tmp_path, capsys):
    out = tmp_path / "lora"
    assert main(train_argv(red_data, tiny_pipeline_dir, out, "--checkpointing-steps", "1")) == 0
    before = (out / LORA_WEIGHTS_NAME).read_bytes()
    assert main(train_argv(red_data, tiny_pipeline_dir, out)) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert (out / LORA_WEIGHTS_NAME).read_bytes() == before  # nothing already written is lost
    assert main(train_argv(red_data, tiny_pipeline_dir, out, "--checkpointing-steps", "1", "--lr", "0.5",
                           "--resume")) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "different configuration" in err and "config.lr" in err
    assert main(train_argv(red_data, tiny_pipeline_dir, out, "--checkpointing-steps", "1", "--resume")) == 0


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--snapshots", "2,x"], "argument --snapshots: expected positive step counts like 50,100,200, got '2,x'"),
        (["--rank", "0"], "argument --rank: expected an integer >= 1, got '0'"),
        (["--max-steps", "0"], "argument --max-steps: expected an integer >= 1, got '0'"),
        (["--lr", "nan"], "argument --lr: expected a finite number > 0, got 'nan'"),
        (["--resolution", "33"], "not a multiple of the VAE factor 2"),
    ],
)
def test_train_bad_options_are_named(red_data, tiny_pipeline_dir, tmp_path, capsys, extra, message):
    assert main(train_argv(red_data, tiny_pipeline_dir, tmp_path / "o", *extra)) == 2
    assert message in capsys.readouterr().err


def test_train_bad_data_and_base_are_named(tiny_pipeline_dir, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(train_argv(tmp_path / "empty", tiny_pipeline_dir, tmp_path / "o")) == 2
    assert "holds no images" in capsys.readouterr().err
    assert main(train_argv(tmp_path / "empty", tmp_path / "nobase", tmp_path / "o")) == 2
    assert "model_index.json is missing" in capsys.readouterr().err


def test_dreambooth_cli_generates_class_images(tiny_pipeline_dir, tmp_path, capsys):
    inst = tmp_path / "inst"
    assert main(["toyworld", "render", "--n", "4", "--fix", "shape=heart", "--out", str(inst), "-q"]) == 0
    argv = ["train", "dreambooth", "--instance-data", str(inst), "--instance-prompt", "a sks shape",
            "--class-prompt", "a shape", "--with-prior-preservation", "--num-class-images", "3",
            "--class-data", str(tmp_path / "cls"), "--base", str(tiny_pipeline_dir), "--out", str(tmp_path / "db"),
            "--max-steps", "2", "--batch-size", "2", "--mode", "full", "-q"]  # fmt: skip
    assert main(argv) == 0
    assert len(list((tmp_path / "cls").glob("*.png"))) == 3
    assert (tmp_path / "db" / "model_index.json").is_file() and (tmp_path / "db" / "unet").is_dir()


def test_personalization_snapshots_train_the_toy_lora(tmp_path, capsys):
    out = tmp_path / "p"
    argv = ["toyworld", "personalization", "--shift", "blur=less@0.6", "--n", "16", "--snapshots", "1,2",
            "--out", str(out), "-q"]  # fmt: skip
    assert main(argv) == 0
    snaps = sorted(p.name for p in (out / "lora" / "snapshots").iterdir())
    assert snaps == ["step-000001", "step-000002"]
    assert json.loads((out / "spec.json").read_text())["shifts"][0]["aspect"] == "blur"


def test_measure_needs_one_model(capsys):
    assert main(["toyworld", "measure", "-q"]) == 2
    assert "exactly one of --lora FILE and --model DIR" in capsys.readouterr().err


LIMITED = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1500, 1500))  # every file past 1500 bytes fails, as on a full disk
from finexl.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_full_disk_at_the_final_save_keeps_the_last_checkpoint_and_resume_saves_with_the_umasks_mode(
    red_data, tiny_pipeline_dir, tmp_path
):
    import os
    import subprocess
    import sys

    out = tmp_path / "lora"
    argv = train_argv(red_data, tiny_pipeline_dir, out, "--checkpointing-steps", "2")
    old = os.umask(0o022)
    try:
        assert main(argv) == 0
        for path in (out / LORA_WEIGHTS_NAME, out / "checkpoints" / "checkpoint-000002" / "trainable.safetensors"):
            assert path.stat().st_mode & 0o777 == 0o644, path  # safetensors itself writes 0600
        (out / LORA_WEIGHTS_NAME).unlink()  # the final save is made again on resume: now on a full disk
        done = subprocess.run([sys.executable, "-c", LIMITED, *argv, "--resume"], capture_output=True, text=True,
                              timeout=300)  # fmt: skip
        err = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(err) == 1, done.stderr[-3000:]
        assert err[0].startswith("finexl: error: cannot write") and "File too large" in err[0]
        assert "the last checkpoint (checkpoint-000003) is kept" in err[0] and "--resume" in err[0]
        assert (out / "checkpoints" / "checkpoint-000003" / "state.json").is_file()
        assert not (out / LORA_WEIGHTS_NAME).exists() and not list(out.glob(".*tmp"))
        assert main([*argv, "--resume"]) == 0  # with room again: the result, from the last checkpoint
    finally:
        os.umask(old)
    for name in (LORA_WEIGHTS_NAME, "finexl_train_config.json"):
        assert (out / name).stat().st_mode & 0o777 == 0o644, name
