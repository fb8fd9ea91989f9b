"""The content-addressed image cache and paired sampling: reuse, resumption after an interruption."""

import numpy as np
import pytest

from finexl.explanation.paired import ImageCache, cached_samples
from finexl.loading import load_pipeline
from finexl.sampling import SamplerConfig

SAMPLER = SamplerConfig(num_inference_steps=2, batch_size=3)


class Interrupted(Exception):
    pass


def test_cache_reuses_images_and_resumes_after_an_interruption(tiny_pipeline_dir, tmp_path):
    pipe = load_pipeline(tiny_pipeline_dir)
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    sampler = SamplerConfig(num_inference_steps=2, batch_size=3, height=size, width=size)
    prompts, seeds = ["a red shape", "a blue shape"] * 4, list(range(8))
    reference = cached_samples(lambda: pipe, "m", prompts, seeds, sampler, None)

    calls = {"n": 0}

    class Flaky:  # the real pipeline, interrupted on its second batch
        def __call__(self, *args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 2:
                raise Interrupted
            return pipe(*args, **kwargs)

    cache = ImageCache(tmp_path)
    with pytest.raises(Interrupted):
        cached_samples(lambda: Flaky(), "m", prompts, seeds, sampler, cache)
    _, missing = cache.load("m", sampler, prompts, seeds)
    assert missing.sum() == 5  # the first batch of 3 is whole in the cache, nothing else
    assert not list(tmp_path.rglob("*.tmp"))
    resumed = cached_samples(lambda: pipe, "m", prompts, seeds, sampler, cache)
    np.testing.assert_array_equal(resumed, reference)

    def must_not_load():
        raise AssertionError("a fully cached model must not be loaded")

    np.testing.assert_array_equal(cached_samples(must_not_load, "m", prompts, seeds, sampler, cache), reference)
    other = SamplerConfig(num_inference_steps=3, batch_size=3, height=size, width=size)
    assert cache.load("m", other, prompts, seeds)[1].all()  # other sampler settings: other images


def test_unreadable_cached_images_are_regenerated(tiny_pipeline_dir, tmp_path):
    pipe = load_pipeline(tiny_pipeline_dir)
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    sampler = SamplerConfig(num_inference_steps=2, height=size, width=size)
    cache = ImageCache(tmp_path)
    first = cached_samples(lambda: pipe, "m", ["a shape"] * 2, [0, 1], sampler, cache)
    victim, other = sorted(tmp_path.rglob("*.png"))
    victim.write_bytes(b"not a png")
    other.write_bytes(other.read_bytes()[: len(other.read_bytes()) // 2])  # a truncated file, as a kill leaves none
    again = cached_samples(lambda: pipe, "m", ["a shape"] * 2, [0, 1], sampler, cache)
    np.testing.assert_array_equal(again, first)
