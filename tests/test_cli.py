import json

import numpy as np
import pytest
from PIL import Image

from finexl.cli import main
from finexl.toyworld.aspects import Aspects
from finexl.toyworld.render import render


def test_render_writes_images_captions_and_exact_values(tmp_path, capsys):
    out = tmp_path / "r"
    assert (
        main(
            [
                "toyworld",
                "render",
                "--n",
                "5",
                "--seed",
                "3",
                "--out",
                str(out),
                "--fix",
                "colour=blue",
                "--fix",
                "blur=0.25",
                "-q",
            ]
        )
        == 0
    )
    records = json.loads((out / "metadata.json").read_text())
    assert len(records) == 5
    for r in records:
        aspects = Aspects.from_dict(r["aspects"])
        assert aspects.colour == "blue" and aspects.blur == 0.25
        assert np.asarray(Image.open(out / r["file"])).shape == (32, 32, 3)
        assert r["caption"]
    assert json.loads((out / "render_config.json").read_text())["fixed"] == {"colour": "blue", "blur": 0.25}
    assert "wrote 5 images" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--fix", "colour=pink"], "unknown value 'pink' for aspect 'colour'"),
        (["--fix", "hue=red"], "unknown aspect 'hue'"),
        (["--fix", "blur=1.5"], "level of aspect 'blur' must be in [0, 1]"),
        (["--fix", "blur=lots"], "must be a number"),
        (["--fix", "colour"], "ASPECT=VALUE"),
        (["--n", "0"], "--n must be >= 1"),
        (["--size", "16"], "--size must be in [32, 64]"),
    ],
)
def test_render_bad_input_is_named(tmp_path, capsys, argv, message):
    assert main(["toyworld", "render", "--out", str(tmp_path / "r"), "-q", *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_render_never_clobbers_existing_output(tmp_path, capsys):
    out = tmp_path / "r"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    assert main(["toyworld", "render", "--n", "2", "--out", str(out), "-q"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "precious.txt").read_text() == "keep me"
    assert main(["toyworld", "render", "--n", "2", "--out", str(out), "-q", "--overwrite"]) == 0
    assert not (out / "precious.txt").exists() and (out / "metadata.json").exists()


def test_env_reports_versions(capsys):
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    for name in ("finexl", "torch", "diffusers", "transformers", "peft", "device"):
        assert name in out


def test_help_explains_itself(capsys):
    assert main(["toyworld", "render", "--help"]) == 0
    assert "metadata.json" in capsys.readouterr().out


def test_render_pixels_match_the_library(tmp_path):
    out = tmp_path / "r"
    main(["toyworld", "render", "--n", "1", "--seed", "0", "--out", str(out), "-q"])
    record = json.loads((out / "metadata.json").read_text())[0]
    aspects = Aspects.from_dict(record["aspects"])
    rng = np.random.default_rng(record["item_seed"])
    from finexl.toyworld.aspects import sample_aspects

    assert sample_aspects(rng) == aspects
    expected = render(aspects, seed=int(rng.integers(2**31)))
    np.testing.assert_array_equal(np.asarray(Image.open(out / record["file"])), expected)


def test_explain_is_quiet_by_default_with_one_bar_and_loaders_speak_with_verbose(tmp_path):
    """A fresh process, as a user runs it: library warnings that are not the user's business and the loaders' bars
    only with -v; finexl's own bar over the pairs, and a line for the maps."""
    import os
    import subprocess
    import sys

    argv = [sys.executable, "-m", "finexl.cli", "explain", "--lora", "toy:red", "--samples", "4", "--bootstrap",
            "10", "--report-pairs", "2", "--out", str(tmp_path / "r"), "--cache", str(tmp_path / "cache")]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_DISABLE_PROGRESS_BARS"}  # as a user's shell has it
    quiet = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    for noise in ("requires torchvision", "Loading pipeline components", "Loading weights", "1/1"):
        assert noise not in quiet.stderr, noise
    assert "explain: 100%" in quiet.stderr and "4/4" in quiet.stderr and "maps of" in quiet.stderr
    argv[argv.index("--cache") + 1] = str(tmp_path / "cache-2")  # the pipeline loads again: nothing cached
    verbose = subprocess.run([*argv, "--overwrite", "-v"], capture_output=True, text=True, timeout=300, env=env)
    assert verbose.returncode == 0, verbose.stderr[-2000:]
    assert "Loading pipeline components" in verbose.stderr and "Loading weights" in verbose.stderr
