"""Faults a user or a machine causes: a full disk, the modes of what finexl writes, a failed final save."""

import json
import os
import subprocess
import sys

import pytest
import torch

from finexl.errors import OutputError
from finexl.utils import atomic_dir, atomic_write_json, atomic_write_text


def test_outputs_get_the_mode_the_umask_gives(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "a.json", {"x": 1})
        with atomic_dir(tmp_path / "folder") as tmp:
            atomic_write_text(tmp / "b.txt", "b")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "folder").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "folder" / "b.txt").stat().st_mode & 0o777 == 0o644


def test_a_write_that_fails_is_one_line_naming_the_path(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match=r"cannot write .*file/out.json"):
        atomic_write_json(tmp_path / "file" / "out.json", {})  # a file where a folder should be


LIMITED = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1500, 1500))  # every file past 1500 bytes fails, as on a full disk
from finexl.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_full_disk_stops_in_one_line_and_leaves_nothing_half_written(tmp_path):
    out = tmp_path / "rendered"
    done = subprocess.run([sys.executable, "-c", LIMITED, "toyworld", "render", "--n", "40", "--out", str(out), "-q"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    err = done.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("finexl: error: cannot write") and "File too large" in err[0]
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_failed_final_save_is_retried_on_resume(tiny_pipeline_dir, tmp_path):
    from finexl.loading import load_pipeline
    from finexl.toyworld.dataset import render_set
    from finexl.train.checkpoint import list_checkpoints
    from finexl.train.data import ImageSet
    from finexl.train.trainer import TrainConfig, train

    data = render_set(8, seed=3)
    data = ImageSet(data.images, list(data.captions), [str(i) for i in range(8)])
    cfg = TrainConfig(max_steps=4, batch_size=4, lr=5e-2, lr_warmup_steps=1, checkpointing_steps=3)
    train(load_pipeline(tiny_pipeline_dir), data, cfg, tmp_path, progress=False)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [3, 4]  # the last step is checkpointed too
    from safetensors.torch import load_file

    weights = tmp_path / "pytorch_lora_weights.safetensors"
    first = load_file(str(weights))
    weights.unlink()  # as if the final save had failed
    (tmp_path / ".result.abc.tmp").mkdir()  # what a kill during the final save leaves
    (tmp_path / ".pytorch_lora_weights.safetensors.x.tmp").write_bytes(b"half")
    result = train(load_pipeline(tiny_pipeline_dir), data, cfg, tmp_path, resume=True, progress=False)
    again = load_file(str(weights))
    assert result.resumed_from == 4 and again.keys() == first.keys()
    assert all(torch.equal(again[k], first[k]) for k in first)  # the same trained weights, saved again
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def _image(path, size=(8, 8)):
    from PIL import Image

    Image.new("RGB", size, (200, 0, 0)).save(path)


@pytest.mark.parametrize(
    "layout, message",
    [
        ({"metadata.json": '[{"file": 3, "caption": "a shape"}]'}, "needs a string 'file'"),
        ({"metadata.jsonl": b"\xff\xfe{}"}, "not UTF-8"),
        ({"a.txt": b"caf\xe9"}, "not UTF-8"),
        ({"bomb": None}, "cannot read image"),
    ],
)
def test_bad_training_data_is_one_line(tmp_path, monkeypatch, layout, message):
    from PIL import Image

    from finexl.train.data import DataError, load_image_folder

    _image(tmp_path / "a.png")
    for name, content in layout.items():
        if name == "bomb":  # an image far larger than PIL agrees to decode
            monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)
        elif isinstance(content, bytes):
            (tmp_path / name).write_bytes(content)
        else:
            (tmp_path / name).write_text(content)
    with pytest.raises(DataError, match=message) as info:
        load_image_folder(tmp_path, require_captions=False)
    assert "\n" not in str(info.value)


def test_wrong_files_given_for_outputs_and_explanations_are_named(tmp_path, capsys):
    from finexl.cli import main

    (tmp_path / "cache").write_text("a file")
    assert main(["explain", "--lora", "data/toy_loras/red", "--out", str(tmp_path / "cache" / "red"), "-q"]) == 2
    assert "cannot write" in capsys.readouterr().err
    assert main(["explain", "--lora", "data/toy_loras/red", "--cache", str(tmp_path / "cache"), "-q"]) == 2
    assert "cache folder" in capsys.readouterr().err and not list(tmp_path.rglob("*.png"))
    (tmp_path / "odd.json").write_text('{"aspects": [1, 2], "method": "finexl"}')
    for argv in (["narrate", str(tmp_path / "odd.json")], ["bench", "score", str(tmp_path / "odd.json"),
                                                             str(tmp_path / "odd.json")]):  # fmt: skip
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "odd.json" in err, err
    bad = (["--threads", "-3"], ["--top", "-3"], ["--samples", "0"], ["--guidance-scale", "nan"], ["--seed", "-5"])
    for flag in bad:
        assert main(["explain", "--lora", "data/toy_loras/red", *flag]) == 2
        assert f"argument {flag[0]}" in capsys.readouterr().err


def test_a_damaged_cache_entry_is_recomputed_with_a_warning(tmp_path, monkeypatch, caplog):
    import numpy as np

    from finexl.explanation.concepts import load_concept_bank, text_directions
    from finexl.explanation.embed import load_embedder
    from finexl.loading import fingerprints

    embedder, bank = load_embedder("toy"), load_concept_bank("toy")
    first = text_directions(embedder, bank, ["a shape"], tmp_path)
    (cached,) = (tmp_path / "directions").iterdir()
    for damage in (cached.read_bytes()[:100], b"", b"PK\x03\x04 not a zip"):  # truncated, empty, a broken zip
        cached.write_bytes(damage)
        caplog.clear()
        again = text_directions(embedder, bank, ["a shape"], tmp_path)
        np.testing.assert_allclose(again.raw, first.raw)
        assert "recomputing unreadable cached directions" in caplog.text
    monkeypatch.setenv("FINEXL_CACHE", str(tmp_path))
    monkeypatch.setattr(fingerprints, "FINGERPRINT_CACHE_BYTES", 0)  # every folder's digest goes through the cache
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    digest = fingerprints.fingerprint_folder(tmp_path / "model")
    cache = tmp_path / fingerprints.FINGERPRINT_CACHE_FILE
    for damage in ('{"trunc', "[1, 2]", json.dumps({str((tmp_path / "model").resolve()): [1]})):
        cache.write_text(damage)
        caplog.clear()
        assert fingerprints.fingerprint_folder(tmp_path / "model") == digest
        assert isinstance(json.loads(cache.read_text()), dict)  # written anew
