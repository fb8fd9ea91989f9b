"""Training folders in the finexl, diffusers and kohya layouts, and the errors for bad ones."""

import json

import numpy as np
import pytest
from PIL import Image

from finexl.train.data import DataError, load_image_folder


def write_images(folder, n=3, size=32, mode="RGB"):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = []
    for i in range(n):
        name = f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).convert(mode).save(folder / name)
        names.append(name)
    return names


def test_three_caption_layouts(tmp_path):
    a = tmp_path / "finexl"
    names = write_images(a / "images")
    (a / "metadata.json").write_text(json.dumps([{"file": f"images/{n}", "caption": f"cap {n}"} for n in names]))
    b = tmp_path / "diffusers"
    names = write_images(b)
    (b / "metadata.jsonl").write_text("\n".join(json.dumps({"file_name": n, "text": f"cap {n}"}) for n in names))
    c = tmp_path / "kohya"
    names = write_images(c)
    for n in names:
        (c / n).with_suffix(".txt").write_text(f"cap {n}\n")
    for folder in (a, b, c):
        data = load_image_folder(folder)
        assert data.images.shape == (3, 32, 32, 3) and data.images.dtype == np.uint8
        assert data.captions == [f"cap img{i}.png" for i in range(3)]


def test_no_captions_is_allowed_only_when_asked(tmp_path):
    write_images(tmp_path)
    assert load_image_folder(tmp_path, require_captions=False).captions is None
    with pytest.raises(DataError, match="no captions"):
        load_image_folder(tmp_path)


def test_resolution_resizes(tmp_path):
    write_images(tmp_path, size=48)
    assert load_image_folder(tmp_path, resolution=32, require_captions=False).images.shape == (3, 32, 32, 3)


def test_bad_folders_are_named(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_image_folder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        load_image_folder(tmp_path / "empty")
    mixed = tmp_path / "mixed"
    write_images(mixed)
    Image.new("RGB", (40, 40)).save(mixed / "zbig.png")
    with pytest.raises(DataError, match="mixed sizes.*zbig.png is 40x40"):
        load_image_folder(mixed, require_captions=False)
    modes = tmp_path / "modes"
    write_images(modes)
    Image.new("L", (32, 32)).save(modes / "zgrey.png")
    with pytest.raises(DataError, match="mixed modes.*zgrey.png is L"):
        load_image_folder(modes, require_captions=False)
    broken = tmp_path / "broken"
    write_images(broken)
    (broken / "zbad.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot read image .*zbad.png"):
        load_image_folder(broken, require_captions=False)


def test_captions_that_do_not_match_the_images(tmp_path):
    a = tmp_path / "a"
    names = write_images(a)
    (a / "metadata.json").write_text(json.dumps([{"file": n, "caption": "x"} for n in names[:2]]))
    with pytest.raises(DataError, match="have no caption in its caption file, e.g. img2.png"):
        load_image_folder(a)
    (a / "metadata.json").write_text(json.dumps([{"file": n, "caption": "x"} for n in names + ["ghost.png"]]))
    with pytest.raises(DataError, match="names ghost.png, which does not exist"):
        load_image_folder(a)
    b = tmp_path / "b"
    names = write_images(b)
    (b / names[0]).with_suffix(".txt").write_text("only one")
    with pytest.raises(DataError, match="some images .* have a .txt caption and some do not"):
        load_image_folder(b)
    c = tmp_path / "c"
    write_images(c)
    (c / "metadata.jsonl").write_text('{"file_name": "img0.png", "text": "x"}\n{broken\n')
    with pytest.raises(DataError, match="line 2 of .*metadata.jsonl is not valid JSON"):
        load_image_folder(c)
