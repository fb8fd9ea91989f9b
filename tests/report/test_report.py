"""The where-it-changed maps (values), the report, compare and card pages, and their bad input."""

import json
import re
import shutil

import numpy as np
import pytest
import torch

from finexl.cli import main
from finexl.errors import InputError, MissingInputError, OutputError
from finexl.explanation.maps import (
    aspect_direction,
    change_maps,
    mass_on,
    pairs_to_show,
    pixel_difference_maps,
    projection_change,
)
from finexl.explanation.result import Explanation, Samples
from finexl.report import write_compare, write_report


@pytest.fixture(scope="module")
def toy_clip_and_directions():
    from finexl.explanation.concepts import load_concept_bank, text_directions
    from finexl.explanation.embed import load_embedder
    from finexl.presets import get_preset

    preset = get_preset("toy")
    embedder = load_embedder("toy")
    return embedder, text_directions(embedder, load_concept_bank("toy"), list(preset.prompts))


def rendered_pairs(change: dict, n: int = 6):
    """Base draws and the same draws with ``change``, same render seed; the object masks of both."""
    from finexl.toyworld.aspects import sample_aspects
    from finexl.toyworld.render import render_with_mask

    base, tuned, masks = [], [], []
    for i in range(n):
        rng = np.random.default_rng(i)
        a = sample_aspects(rng, pattern="plain", blur=0.0)
        b, mb = render_with_mask(a, seed=i)
        t, mt = render_with_mask(a.replace(**change), seed=i)
        base.append(b)
        tuned.append(t)
        masks.append((mb > 0) | (mt > 0))
    return np.stack(base), np.stack(tuned), np.stack(masks)


def test_the_differentiable_path_gives_the_same_embeddings(toy_clip_and_directions):
    embedder, _ = toy_clip_and_directions
    base, _, _ = rendered_pairs({"colour": "red"}, 4)
    pixels = torch.from_numpy(base).permute(0, 3, 1, 2).float() / 255
    again = torch.nn.functional.normalize(embedder.pixel_features(pixels), dim=-1).detach().double().numpy()
    np.testing.assert_allclose(again, embedder.embed_images(base), atol=1e-5)


def test_maps_are_complete_and_put_a_colour_change_on_the_object(toy_clip_and_directions):
    embedder, directions = toy_clip_and_directions
    base, tuned, masks = rendered_pairs({"colour": "red"})
    u = aspect_direction(directions, "red", "increase")
    maps = change_maps(embedder, base, tuned, u, steps=32)
    assert maps.shape == base.shape[:3]
    # completeness: each map sums to the pair's own move along the direction
    np.testing.assert_allclose(maps.reshape(len(maps), -1).sum(axis=1), projection_change(embedder, base, tuned, u),
                               rtol=0.05, atol=2e-4)  # fmt: skip
    assert (projection_change(embedder, base, tuned, u) > 0).sum() >= 4  # turning red moves toward "red"
    on_object = mass_on(maps, masks)
    assert np.nanmean(on_object) > 0.9
    # where the two images are equal the map is exactly zero
    same = (base == tuned).all(axis=-1)
    assert np.abs(maps[same]).max() == 0


def test_maps_tell_two_aspects_apart_where_the_pixel_difference_cannot(toy_clip_and_directions):
    """A pair that turns red *and* gets a striped background: the colour map lies on the object, the pattern map
    off it, while the pixel difference is one map for both."""
    embedder, directions = toy_clip_and_directions
    base, tuned, masks = rendered_pairs({"colour": "red", "pattern": "stripes"}, 8)
    colour = change_maps(embedder, base, tuned, aspect_direction(directions, "red", "increase"))
    pattern = change_maps(embedder, base, tuned, aspect_direction(directions, "striped background", "increase"))
    pixels = pixel_difference_maps(base, tuned)
    assert np.nanmean(mass_on(colour, masks)) > np.nanmean(mass_on(pixels, masks)) + 0.15
    assert np.nanmean(mass_on(pattern, ~masks)) > np.nanmean(mass_on(colour, ~masks)) + 0.2


def test_maps_of_several_directions_at_once_equal_one_by_one(toy_clip_and_directions):
    embedder, directions = toy_clip_and_directions
    base, tuned, _ = rendered_pairs({"colour": "red", "fill": "outline"}, 3)
    units = np.stack([aspect_direction(directions, c, "increase") for c in ("red", "outlined")])
    together = change_maps(embedder, base, tuned, units, steps=8)
    assert together.shape == (2, 3, 32, 32)
    for j in range(2):
        np.testing.assert_allclose(together[j], change_maps(embedder, base, tuned, units[j], steps=8), atol=1e-6)


def test_aspect_direction_points_the_way_of_the_change(toy_clip_and_directions):
    _, directions = toy_clip_and_directions
    up, down = aspect_direction(directions, "red", "increase"), aspect_direction(directions, "red", "decrease")
    np.testing.assert_allclose(up, -down)
    assert np.linalg.norm(up) == pytest.approx(1.0)
    with pytest.raises(KeyError, match="velvet"):
        aspect_direction(directions, "velvet", "increase")


def test_pairs_to_show_takes_each_aspects_strongest_in_turn_then_fills_up():
    moves = {"colour": np.array([0.1, 0.9, 0.5, 0.0, 0.2]), "fill": np.array([0.8, 0.95, 0.0, 0.0, 0.7])}
    assert pairs_to_show(moves, 5, 4) == [1, 0, 2, 4]
    assert pairs_to_show({}, 5, 3) == [0, 1, 2]
    assert pairs_to_show(moves, 5, 10) == [1, 0, 2, 4, 3]


def test_explain_out_writes_the_report_with_the_jsons_numbers(red_folder):
    expl = json.loads((red_folder / "explanation.json").read_text())
    html = (red_folder / "report.html").read_text()
    assert expl["settings"]["report_pairs"] == 16 and expl["settings"]["samples"] == "auto"
    assert not re.search(r"""(src|href)\s*=\s*["'](https?:|//)""", html) and "<script" not in html
    assert "Changes colour (toward" in html
    for a in expl["aspects"]:  # every number of the table is the JSON's
        row = re.search(rf'<tr class="\w+" data-aspect="{a["aspect"]}">(.*?)</tr>', html, re.S).group(1)
        assert f'data-field="score">{a["score"]:.3f}<' in row
        assert f"[{a['interval'][0]:.3f}, {a['interval'][1]:.3f}]" in row
        assert f'data-field="verdict">{"CHANGED" if a["changed"] else "-"}<' in row
    samples = Samples.load(red_folder / "samples")
    changed = [a["aspect"] for a in expl["aspects"] if a["changed"]]
    assert len(samples.index) == 16 and samples.base.shape == (16, 32, 32, 3)
    assert sorted(samples.maps) == sorted(changed) and samples.maps["colour"].shape == (16, 32, 32)
    assert html.count('class="pair"') == 16 and html.count('class="map"') == 4 * len(changed)
    # the rule as computed, the joint fit's numbers, and why each aspect above its null is not CHANGED
    from markupsafe import escape

    from finexl.explanation.result import changed_rule

    assert escape(changed_rule(0.9, True)) in html and "joint fit&#39;s own null" in html
    for a in expl["aspects"]:
        row = re.search(rf'<tr class="\w+" data-aspect="{a["aspect"]}">(.*?)</tr>', html, re.S).group(1)
        assert f'data-field="joint-threshold">{a["joint_threshold"]:.3f}<' in row
        if not a["changed"] and a["interval"][0] > a["threshold"]:
            assert "not needed by the joint fit" in row and "account" in row
    # the kept pairs are those that moved most along colour: the first is the largest move
    assert samples.moves["colour"][0] == max(samples.moves["colour"])


def test_report_rewrites_its_own_page_and_card_rewrites_only_with_overwrite(red_folder, tmp_path, capsys):
    folder = shutil.copytree(red_folder, tmp_path / "red")
    before = (folder / "report.html").read_bytes()
    (folder / "report.html").write_text("old")
    assert main(["report", str(folder)]) == 0  # right after explain --out: the folder's own page is made again
    assert (folder / "report.html").read_bytes() == before  # the same explanation renders the same page
    assert main(["report", str(folder), "--out", str(folder / "report.html")]) == 2  # another --out: not replaced
    assert "report.html exists; pass --overwrite" in capsys.readouterr().err
    assert main(["card", str(folder)]) == 0
    card = (folder / "card.md").read_text()
    expl = Explanation.from_json(folder)
    colour = expl.aspect("colour")
    assert f"| colour | {colour.toward} | {colour.score:.2f} |" in card and "card_strip.png" in card
    from PIL import Image

    with Image.open(folder / "card_strip.png") as strip:
        assert strip.size == (4 * 32 + 3 * 2, 2 * 32 + 2)
    assert main(["card", str(folder)]) == 2


def test_compare_puts_models_on_one_axis_and_refuses_other_banks(red_folder, tmp_path):
    other = shutil.copytree(red_folder, tmp_path / "other")
    page = write_compare([red_folder, other], tmp_path / "compare.html")
    html = page.read_text()
    expl = json.loads((red_folder / "explanation.json").read_text())
    assert html.count('class="entry"') == 2 * len(expl["aspects"])
    assert f'data-score="{expl["aspects"][0]["score"]:.3f}"' in html
    with pytest.raises(OutputError, match="exists"):
        write_compare([red_folder, other], tmp_path / "compare.html")
    with pytest.raises(InputError, match="at least two"):
        write_compare([red_folder], tmp_path / "one.html")
    for key, what in (("concept_bank", "concept bank"), ("models", "CLIP")):
        data = json.loads((red_folder / "explanation.json").read_text())
        if key == "concept_bank":
            data["concept_bank"]["digest"] = "0" * 12
        else:
            data["models"]["clip"]["fingerprint"] = "f" * 12
        (other / "explanation.json").write_text(json.dumps(data))
        with pytest.raises(InputError, match=f"another {what}"):
            write_compare([red_folder, other], tmp_path / "refused.html", overwrite=True)
    assert not (tmp_path / "refused.html").exists()


def test_a_broken_folder_is_named_in_one_line(red_folder, tmp_path, capsys):
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
    half = shutil.copytree(red_folder, tmp_path / "half")
    (half / "explanation.json").unlink()
    (half / "report.html").unlink()
    assert main(["report", str(half)]) == 2
    err = capsys.readouterr().err
    assert "explanation.json is missing" in err and len(err.strip().splitlines()) == 1
    broken = shutil.copytree(red_folder, tmp_path / "broken")
    (broken / "samples" / "tuned_003.png").unlink()
    with pytest.raises(MissingInputError, match="tuned_003.png is missing"):
        write_report(broken, overwrite=True)
    (broken / "samples" / "tuned_003.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="tuned_003.png is not a readable image"):
        write_report(broken, overwrite=True)
    future = shutil.copytree(red_folder, tmp_path / "future")
    data = json.loads((future / "explanation.json").read_text())
    data["schema"] = "finexl-explanation/9"
    (future / "explanation.json").write_text(json.dumps(data))
    assert main(["report", str(future), "--overwrite"]) == 2
    assert "finexl-explanation/9" in capsys.readouterr().err
    assert (future / "report.html").read_bytes() == (red_folder / "report.html").read_bytes()  # untouched


def parsed_tags(html: str) -> list[tuple[str, dict]]:
    from html.parser import HTMLParser

    class Tags(HTMLParser):
        found: list = []

        def handle_starttag(self, tag, attrs):
            self.found.append((tag, dict(attrs)))

    parser = Tags()
    parser.found = []
    parser.feed(html)
    return parser.found


def test_hostile_text_in_every_field_is_escaped_in_the_pages(red_folder, tmp_path):
    from finexl.report import model_card

    from .conftest import HOSTILE, make_hostile

    folder = make_hostile(red_folder, tmp_path / "hostile")
    other = make_hostile(red_folder, tmp_path / "hostile-2")
    pages = [write_report(folder, overwrite=True).read_text(),
             write_compare([folder, other], tmp_path / "compare.html").read_text()]  # fmt: skip
    for html in pages:  # parsed as a browser would: no script element, no injected element or attribute
        tags = parsed_tags(html)
        assert not [t for t, attrs in tags if t == "script" or {"onerror", "data-pwned"} & set(attrs)]
        assert "&lt;script&gt;window.pwned = 1&lt;/script&gt;" in html  # shown as text
    charts = [attrs for t, attrs in parsed_tags(pages[0]) if t == "figure" and "data-aspect" in attrs]
    assert len(charts) == len(json.loads((folder / "explanation.json").read_text())["sweep"]["aspects"])
    assert all(c["data-aspect"].endswith(HOSTILE) for c in charts)  # the attribute holds the text, inert
    stack_rows = [attrs for t, attrs in parsed_tags(pages[0]) if t == "tr" and attrs.get("data-aspect")]
    assert len([r for r in stack_rows if r["data-aspect"].endswith(HOSTILE)]) >= len(charts)  # scores + stack rows
    card = model_card(folder, overwrite=True).read_text()
    assert "<script" not in card and "<img" not in card and "<b " not in card and "[link](javascript" not in card
    assert "&lt;script&gt;" in card and "\\*\\*x\\*\\*" in card and "\\| y" in card
    assert HOSTILE not in card
