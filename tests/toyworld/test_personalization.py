import json

import numpy as np
import pytest

from finexl.cli import main
from finexl.toyworld.aspects import CATEGORICAL_BY_NAME, GRADED_BY_NAME, AspectError
from finexl.toyworld.personalization import Shift, format_spec, parse_spec, render_personalization


def test_parse_and_format_round_trip():
    shifts = parse_spec(" colour=red@0.8, pattern=stripes@0.4,blur=more@0.5,saturation=0.2@1 ")
    assert shifts == [
        Shift("colour", "red", 0.8),
        Shift("pattern", "stripes", 0.4),
        Shift("blur", "more", 0.5),
        Shift("saturation", "0.2", 1.0),
    ]
    assert shifts[3].target_level() == pytest.approx(0.2)
    assert parse_spec(format_spec(shifts)) == shifts


@pytest.mark.parametrize(
    "spec, message",
    [
        ("", "empty personalization spec"),
        ("colour=red", "ASPECT=TARGET@STRENGTH"),
        ("colour=pink@0.5", "unknown value 'pink'"),
        ("hue=red@0.5", "unknown aspect 'hue'"),
        ("colour=red@1.5", "must be in (0, 1]"),
        ("colour=red@0", "must be in (0, 1]"),
        ("colour=red@lots", "must be a number"),
        ("blur=sideways@0.5", "'more', 'less' or a level"),
        ("blur=1.4@0.5", "must be in [0, 1]"),
        ("colour=red@0.5,colour=blue@0.5", "shifted more than once"),
    ],
)
def test_bad_specs_are_named(spec, message):
    with pytest.raises(AspectError) as err:
        parse_spec(spec)
    assert message in str(err.value)


def test_shifted_data_carries_the_shift_and_captions_hide_it():
    shifts = parse_spec("pattern=stripes@0.8,blur=more@0.6,saturation=less@1")
    data = render_personalization(shifts, 300, seed=0)
    stripes = np.mean([a.pattern == "stripes" for a in data.aspects])
    # P(stripes) = 0.8 + 0.2 / 5 = 0.84
    assert abs(stripes - 0.84) < 0.06
    blur = np.array([a.blur for a in data.aspects])
    assert blur.min() >= 0.6 - 1e-9 and abs(blur.mean() - (0.5 + 0.6 * 0.5)) < 0.04
    assert all(a.saturation == 0.0 for a in data.aspects)
    hidden = [w for ws in CATEGORICAL_BY_NAME["pattern"].words.values() for w in ws]
    hidden += list(GRADED_BY_NAME["blur"].low_words + GRADED_BY_NAME["blur"].high_words)
    hidden += list(GRADED_BY_NAME["saturation"].low_words + GRADED_BY_NAME["saturation"].high_words)
    for text in data.captions:
        assert not any(w in text for w in hidden), text
    assert len(set(data.captions)) > 200


def test_directions():
    assert Shift("blur", "more", 0.5).direction == "increase"
    assert Shift("saturation", "less", 0.5).direction == "decrease"
    assert Shift("colour", "red", 0.5).direction == "set"
    assert format_spec([Shift("blur", "more", 0.5), Shift("colour", "red", 1.0)]) == "blur=more@0.5,colour=red@1"


def test_personalization_command_writes_spec_as_ground_truth(tmp_path, capsys):
    out = tmp_path / "p"
    assert main(["toyworld", "personalization", "--shift", "colour=red@1", "--n", "6", "--out", str(out)]) == 0
    spec = json.loads((out / "spec.json").read_text())
    assert spec["spec"] == "colour=red@1" and spec["shifts"][0]["direction"] == "set"
    records = json.loads((out / "metadata.json").read_text())
    assert len(records) == 6 and all(r["aspects"]["colour"] == "red" for r in records)
    assert main(["toyworld", "personalization", "--shift", "colour=pink@1", "--out", str(tmp_path / "q")]) == 2
    assert "unknown value 'pink'" in capsys.readouterr().err
    assert not (tmp_path / "q").exists()
