import numpy as np
import pytest

from finexl.toyworld.aspects import CATEGORICAL, GRADED, AspectError, Aspects, sample_aspects
from finexl.toyworld.render import render


def test_render_is_deterministic_for_a_seed():
    a = sample_aspects(np.random.default_rng(3))
    np.testing.assert_array_equal(render(a, seed=7), render(a, seed=7))
    assert not np.array_equal(render(a.replace(grain=0.9), seed=7), render(a.replace(grain=0.9), seed=8))


def test_render_shape_and_sizes():
    a = Aspects()
    for size in (32, 48, 64):
        image = render(a, seed=0, size=size)
        assert image.shape == (size, size, 3) and image.dtype == np.uint8
    with pytest.raises(ValueError, match="image size"):
        render(a, size=16)


def test_stored_pixels_do_not_drift():
    # The shipped models were trained on this renderer: an accidental change to it must fail loudly.
    image = render(Aspects(shape="heart", colour="blue", pattern="stripes", background="beige", size=0.7), seed=1)
    np.testing.assert_array_equal(image[16, 10:22:2, 2], [223, 223, 223, 223, 223, 223])
    np.testing.assert_array_equal(image[2, 0:12:2, 0], [221, 177, 177, 221, 221, 177])


@pytest.mark.parametrize("aspect", [a.name for a in CATEGORICAL])
def test_every_categorical_value_draws_differently(aspect):
    base = Aspects(size=0.7, saturation=0.8)
    values = next(a.values for a in CATEGORICAL if a.name == aspect)
    images = [render(base.replace(**{aspect: v}), seed=0).astype(int) for v in values]
    for i in range(len(images)):
        for j in range(i + 1, len(images)):
            assert np.abs(images[i] - images[j]).mean() > 1.0, (values[i], values[j])


def test_graded_aspects_move_the_pixel_statistic_they_name():
    base = Aspects(size=0.5, saturation=0.5, brightness=0.5, background="grey", colour="green")

    def stat(image, kind):
        x = image.astype(float) / 255
        if kind == "size":  # pixels far from the grey background
            return (np.abs(x - x[0, 0]).sum(-1) > 0.3).mean()
        if kind == "blur":  # high-frequency energy falls
            return -np.abs(np.diff(x, axis=0)).mean()
        if kind == "grain":
            return np.abs(np.diff(x, axis=1)).mean()
        if kind == "saturation":
            return (x.max(-1) - x.min(-1)).mean()
        if kind == "brightness":
            return x.mean()
        raise KeyError(kind)

    for aspect in GRADED:
        kw = {"grain": 0.0} if aspect.name == "blur" else {}
        low = stat(render(base.replace(**{aspect.name: 0.1}, **kw), seed=0), aspect.name)
        high = stat(render(base.replace(**{aspect.name: 0.9}, **kw), seed=0), aspect.name)
        assert high > low, aspect.name


def test_bad_aspects_are_named():
    with pytest.raises(AspectError, match="'colour'"):
        Aspects(colour="pink")
    with pytest.raises(AspectError, match="'blur'"):
        Aspects(blur=1.5)
    with pytest.raises(AspectError, match="unknown aspect name"):
        Aspects.from_dict({"hue": "red"})
    with pytest.raises(AspectError, match="'size'"):
        sample_aspects(np.random.default_rng(0), size=-0.1)


@pytest.mark.parametrize("shape", ["triangle", "heart", "arrow", "house", "moon"])
def test_outline_leaves_an_open_interior_at_every_size(shape):
    # A thin shape drawn in outline must not cover the same pixels as the filled one (small crescents once did).
    for size in (0.0, 0.5, 1.0):
        common = dict(shape=shape, colour="blue", background="white", pattern="plain", size=size, blur=0.0, grain=0.0)
        filled = render(Aspects(fill="filled", **common), seed=3).astype(int)
        outline = render(Aspects(fill="outline", **common), seed=3).astype(int)
        inked = lambda im: int((im.sum(axis=2) < 600).sum())  # noqa: E731 - pixels darker than the white ground
        assert inked(outline) <= 0.85 * inked(filled), (shape, size, inked(outline), inked(filled))
