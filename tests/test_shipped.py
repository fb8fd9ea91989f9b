"""The weights shipped in data/ load through their one loader each and do their job on fresh data.

Thresholds sit below the numbers measured by `finexl toyworld eval` (README), on small samples so the suite stays
fast: they fail when weights are missing, corrupt, swapped, or no longer match the renderer.
"""

import numpy as np
import pytest
import torch

from finexl.sampling import SamplerConfig, sample_images
from finexl.toyworld.aspects import CATEGORICAL, GRADED
from finexl.toyworld.clip import load_toy_clip, zero_shot_accuracy
from finexl.toyworld.dataset import render_set
from finexl.toyworld.diffusion import load_toy_pipeline
from finexl.toyworld.judge import judge_accuracy, load_judge, read_images

HELD_OUT = 20_000  # a seed no training script uses

# A few standard errors (n = 300) below the accuracies measured on 2000 held-out renders (README).
JUDGE_MIN_ACCURACY = 0.97
JUDGE_MAX_MAE = 0.10
CLIP_MIN_ACCURACY = {  # measured on 2000 held-out renders: 1.000, 0.993, 0.989, 0.994, 0.980, 0.906, 0.900
    "colour": 0.95,
    "background": 0.93,
    "fill": 0.92,
    "position": 0.93,
    "pattern": 0.90,
    "shape": 0.84,
    "pose": 0.84,
}


@pytest.fixture(scope="module")
def held_out():
    return render_set(300, seed=HELD_OUT)


def test_judge_reads_held_out_renders(held_out):
    acc = judge_accuracy(load_judge(), held_out.images, held_out.aspects)
    for aspect in CATEGORICAL:
        assert acc[aspect.name] >= JUDGE_MIN_ACCURACY, (aspect.name, acc[aspect.name])
    for aspect in GRADED:
        assert acc[f"mae_{aspect.name}"] <= JUDGE_MAX_MAE, (aspect.name, acc[f"mae_{aspect.name}"])


def test_toy_clip_zero_shot(held_out):
    model, tokenizer = load_toy_clip()
    acc = zero_shot_accuracy(model, tokenizer, held_out.images, held_out.aspects)
    for aspect, minimum in CLIP_MIN_ACCURACY.items():
        assert acc[aspect] >= minimum, (aspect, acc[aspect])


def test_pipeline_draws_what_the_prompt_names():
    # Four of the aspects the shipped pipeline follows, two of them spatial (README, Measured quality).
    pipe = load_toy_pipeline()
    judge = load_judge()
    prompts = ["a blue shape", "a shape, grainy", "a shape on the left", "a shape upside-down"]
    prompts = [p for p in prompts for _ in range(8)]
    images = sample_images(pipe, prompts, list(range(32)), SamplerConfig(num_inference_steps=20))
    reading = read_images(judge, images)
    assert np.mean([c == "blue" for c in reading.categorical["colour"][:8]]) >= 0.6
    assert np.mean(reading.graded["grain"][8:16] > 0.5) >= 0.6
    assert np.mean([c == "left" for c in reading.categorical["position"][16:24]]) >= 0.6
    assert np.mean([c == "upside-down" for c in reading.categorical["pose"][24:]]) >= 0.6


def test_pipeline_text_encoder_is_the_toy_clip_text_tower():
    pipe = load_toy_pipeline()
    model, tokenizer = load_toy_clip()
    tower = model.text_model.state_dict()
    encoder = pipe.text_encoder.state_dict()
    assert encoder.keys() == tower.keys()
    for name, weight in tower.items():
        torch.testing.assert_close(encoder[name], weight, msg=name)
    # The tower reads the CLIP tokenizer's ids, so the pipeline must carry that tokenizer, ids and all.
    for text in render_set(100, seed=HELD_OUT).captions:
        assert pipe.tokenizer(text).input_ids == tokenizer(text).input_ids
    with torch.no_grad():
        ids = tokenizer(["a red heart"], return_tensors="pt").input_ids
        assert torch.isfinite(pipe.text_encoder(ids)[0]).all()
