import json

import numpy as np
import pytest

from finexl.sampling import SamplerConfig, sample_images
from finexl.toyworld.dataset import render_set
from finexl.toyworld.diffusion import load_toy_pipeline
from finexl.train.lora import CONFIG_NAME, LORA_WEIGHTS_NAME, LoraTrainConfig, train_lora

SAMPLER = SamplerConfig(num_inference_steps=3, batch_size=4)
PROMPTS, SEEDS = ["a red heart", "a shape", "a blue moon", "a striped background"], [0, 1, 2, 3]


@pytest.fixture(scope="module")
def trained(tiny_pipeline_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("lora")
    data = render_set(16, seed=5, fixed={"colour": "red"})
    pipe = load_toy_pipeline(tiny_pipeline_dir)
    # alpha != rank: loading must apply alpha / r, not assume alpha == r.
    cfg = LoraTrainConfig(rank=4, alpha=8.0, steps=6, batch_size=8, lr=5e-2, warmup=1)
    train_lora(pipe, data.images, data.captions, cfg, out, progress=False)
    return out, sample_images(pipe, PROMPTS, SEEDS, SAMPLER)


def test_lora_file_records_rank_and_alpha(trained):
    from safetensors import safe_open

    out, _ = trained
    with safe_open(out / LORA_WEIGHTS_NAME, framework="pt") as f:
        keys = list(f.keys())
        metadata = f.metadata()
    assert keys and all(k.startswith("unet.") for k in keys)
    assert any("lora" in k for k in keys)
    adapter = json.loads(metadata["lora_adapter_metadata"])
    assert adapter["unet.r"] == 4 and adapter["unet.lora_alpha"] == 8.0
    assert json.loads((out / CONFIG_NAME).read_text())["steps_done"] == 6


def test_load_lora_weights_reproduces_the_trained_model(trained, tiny_pipeline_dir):
    out, trained_images = trained
    base = load_toy_pipeline(tiny_pipeline_dir)
    base_images = sample_images(base, PROMPTS, SEEDS, SAMPLER)
    # The LoRA really changes the model (so the comparison below can fail) ...
    assert np.abs(base_images.astype(int) - trained_images.astype(int)).mean() > 1.0
    base.load_lora_weights(out, weight_name=LORA_WEIGHTS_NAME)
    loaded_images = sample_images(base, PROMPTS, SEEDS, SAMPLER)
    # ... and loading it onto a fresh base reproduces the trained model.
    np.testing.assert_allclose(loaded_images.astype(int), trained_images.astype(int), atol=1)


def test_bad_training_data_is_named(tiny_pipeline_dir, tmp_path):
    pipe = load_toy_pipeline(tiny_pipeline_dir)
    data = render_set(4, seed=0)
    with pytest.raises(ValueError, match="one caption per image"):
        train_lora(pipe, data.images, data.captions[:3], LoraTrainConfig(steps=1), tmp_path / "a", progress=False)
    with pytest.raises(ValueError, match="no training images"):
        train_lora(pipe, data.images[:0], [], LoraTrainConfig(steps=1), tmp_path / "b", progress=False)
    with pytest.raises(ValueError, match="rank must be >= 1"):
        LoraTrainConfig(rank=0)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
