"""Seeded sampling: any batch size gives the same images; out of memory shrinks the batch and goes on."""

import logging

import numpy as np
import pytest
import torch

from finexl.errors import BackendError
from finexl.loading import load_pipeline
from finexl.sampling import SamplerConfig, sample_images

PROMPTS = ["a shape", "a red thing", "a figure", "a drawing of a thing", "a shape"]
SEEDS = [0, 1, 2, 3, 4]


class RunsOutOfMemory:
    """The real pipeline behind a device that holds at most ``limit`` images at once (a fault injected around it)."""

    def __init__(self, pipe, limit: int):
        self.pipe, self.limit, self.calls = pipe, limit, []

    def __call__(self, prompts, **kw):
        self.calls.append(len(prompts))
        if len(prompts) > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 52.00 GiB")
        return self.pipe(prompts, **kw)


@pytest.fixture(scope="module")
def pipe(tiny_pipeline_dir):
    return load_pipeline(tiny_pipeline_dir)


def cfg(batch_size):
    return SamplerConfig(num_inference_steps=2, batch_size=batch_size, height=16, width=16)


def test_any_batch_size_gives_the_same_images(pipe):
    one = sample_images(pipe, PROMPTS, SEEDS, cfg(1))
    for size in (2, 5):
        other = sample_images(pipe, PROMPTS, SEEDS, cfg(size))
        assert np.abs(other.astype(int) - one.astype(int)).max() <= 1  # rounding of a batched matmul at most
    assert np.abs(one[0].astype(int) - one[4].astype(int)).max() > 5  # same prompt, other seed: another image


def test_out_of_memory_halves_the_batch_and_keeps_the_images(pipe, caplog):
    flaky = RunsOutOfMemory(pipe, limit=2)
    with caplog.at_level(logging.WARNING, logger="finexl.sampling"):
        images = sample_images(flaky, PROMPTS, SEEDS, cfg(8))
    assert flaky.calls == [5, 2, 2, 1]  # all 5 fail, then halves of what was tried: 2, 2 and the last 1
    assert "out of memory with 5 images at once; going on with batches of 2" in caplog.text
    reference = sample_images(pipe, PROMPTS, SEEDS, cfg(2))
    assert np.abs(images.astype(int) - reference.astype(int)).max() <= 1
    with pytest.raises(BackendError, match="out of memory even one image at a time"):
        sample_images(RunsOutOfMemory(pipe, limit=0), PROMPTS, SEEDS, cfg(4))


def test_a_multistep_scheduler_samples_and_the_pipelines_own_comes_back(pipe, tmp_path):
    from finexl.errors import ConfigError
    from finexl.explanation.paired import ImageCache

    own = pipe.scheduler
    fast = SamplerConfig(num_inference_steps=3, height=16, width=16, scheduler="unipc")
    images = sample_images(pipe, PROMPTS[:2], SEEDS[:2], fast)
    assert pipe.scheduler is own  # put back after sampling
    default = sample_images(pipe, PROMPTS[:2], SEEDS[:2], SamplerConfig(num_inference_steps=3, height=16, width=16))
    assert images.shape == default.shape and not np.array_equal(images, default)
    assert np.array_equal(images, sample_images(pipe, PROMPTS[:2], SEEDS[:2], fast))  # seeded
    # the scheduler is part of an image's cache key; the pipeline's own keeps the key it had before the setting
    cache = ImageCache(tmp_path)
    assert cache._folder("m", fast) != cache._folder("m", SamplerConfig(num_inference_steps=3, height=16, width=16))
    assert cache._folder("m", SamplerConfig()).name == "f35d1dc602ba"  # the key of the code before the setting
    with pytest.raises(ConfigError, match="unknown scheduler 'euler'"):
        SamplerConfig(scheduler="euler")
