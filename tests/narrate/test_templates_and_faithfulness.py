"""Templated sentences, and the faithfulness check on adversarial sentences."""

import pytest

from finexl.narrate.faithfulness import check
from finexl.narrate.templates import band, render

from .conftest import FAITHFUL


def test_bands_are_the_documented_cut_points():
    assert [band(s) for s in (0.05, 0.19, 0.2, 0.44, 0.45, 0.9)] == [
        "slight", "slight", "moderate", "moderate", "strong", "strong",
    ]  # fmt: skip


def test_formats_say_level_direction_and_numbers(expl):
    bullets = render(expl, "bullets")
    assert bullets.splitlines() == [
        "- colour: strongly more scarlet (strong, 0.47, interval 0.43-0.55)",
        "- blur: moderately less blurry (toward sharp) (moderate, 0.31, interval 0.25-0.36)",
    ]
    summary = render(expl, "summary", asked=["pose"])
    assert summary.startswith("Changed: colour strongly more scarlet (0.47); blur moderately less blurry")
    assert summary.endswith("pose unchanged.") and "\n" not in summary
    paragraph = render(expl, "paragraph", asked=["pose"])
    assert paragraph.startswith("Colour: the colour shifts strongly more scarlet")
    assert "Style: the blur shifts moderately less blurry" in paragraph and "Pose: the pose is unchanged" in paragraph
    assert "size" not in render(expl, "bullets", asked=["pose"])  # only asked-about unchanged aspects are named
    with pytest.raises(ValueError, match="unknown aspect"):
        render(expl, "bullets", asked=["lighting"])


@pytest.mark.parametrize("form", ["summary", "bullets", "paragraph"])
def test_templates_pass_the_faithfulness_check(expl, form):
    assert check(render(expl, form, asked=["pose", "size"]), expl).ok


def test_unchanged_says_why(expl):
    assert "- pose: unchanged (0.04, interval 0.00-0.08, below the null 0.10)" in render(expl, "bullets", ["pose"])
    expl["aspects"][2]["interval"] = [0.15, 0.2]  # above its null, but the joint fit did not need it
    text = render(expl, "bullets", ["pose"])
    line = text.splitlines()[-1]
    assert line.endswith("accounted for by the changed aspects)") and "below" not in line
    assert check(text, expl).ok


def test_no_change_is_said_and_checked(expl):
    for a in expl["aspects"]:
        a["changed"] = False
    assert render(expl, "summary") == "No significant change."
    assert check("No significant change.", expl).ok
    assert not check("colour: strongly more scarlet.", expl).ok


def test_a_faithful_llm_answer_passes(expl):
    report = check(FAITHFUL, expl)
    assert report.ok, report.problems


@pytest.mark.parametrize(
    "text, problem",
    [
        ("colour: strongly less scarlet (0.47).\nblur: moderately less blurry.", "decreased"),  # wrong direction
        ("colour: strongly more scarlet.\nblur: moderately more blurry.", "increased"),  # wrong direction
        ("colour: slightly more scarlet.\nblur: moderately less blurry.", "level slight"),  # wrong band
        ("colour: more scarlet.\nblur: moderately less blurry.", "no level"),  # no band at all
        ("colour: strongly more scarlet.", "drops 'blur'"),  # dropped aspect
        (FAITHFUL + "\nlighting: strongly warmer.", "'lighting'"),  # invented aspect
        (FAITHFUL + "\nThe images also have moderately warmer lighting.", "'lighting'"),  # invented, no prefix
        (FAITHFUL + "\npose: moderately more upright.", "'pose' changed"),  # unchanged aspect claimed changed
        ("colour: strongly more scarlet, about 0.9.\nblur: moderately less blurry.", "outside its interval"),
        ("colour: strongly more scarlet (up to 80%).\nblur: moderately less blurry.", "outside its interval"),
        ("", "empty"),
    ],
)
def test_adversarial_sentences_fail(expl, text, problem):
    report = check(text, expl)
    assert not report.ok
    assert any(problem in p for p in report.problems), report.problems


def test_unchanged_aspects_may_be_called_unchanged(expl):
    assert check(FAITHFUL + "\npose: unchanged (0.04).", expl).ok
