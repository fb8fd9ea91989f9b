"""The trainer on a tiny randomly initialised SDXL pipeline: two text encoders, pooled text and size ids."""

import numpy as np
import pytest
import torch

from finexl.loading import LORA_WEIGHTS_NAME, load_lora, load_pipeline
from finexl.sampling import SamplerConfig, sample_images
from finexl.toyworld.dataset import render_set
from finexl.train.data import ImageSet
from finexl.train.trainer import TrainConfig, train


@pytest.fixture(scope="module")
def tiny_sdxl_dir(tmp_path_factory, tiny_tokenizer_dir):
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    torch.manual_seed(0)
    tokenizer = CLIPTokenizer.from_pretrained(tiny_tokenizer_dir)
    text = dict(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                num_attention_heads=2, max_position_embeddings=tokenizer.model_max_length, projection_dim=16,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, attention_head_dim=(2, 4), norm_num_groups=8, addition_embed_type="text_time",
        addition_time_embed_dim=8, projection_class_embeddings_input_dim=6 * 8 + 16,
    )  # fmt: skip
    vae = AutoencoderKL(block_out_channels=(16, 32), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=8,
                        sample_size=32)  # fmt: skip
    pipe = StableDiffusionXLPipeline(
        vae=vae, text_encoder=CLIPTextModel(CLIPTextConfig(**text)), tokenizer=tokenizer,
        text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**text)), tokenizer_2=tokenizer, unet=unet,
        scheduler=EulerDiscreteScheduler(), force_zeros_for_empty_prompt=False,
    )  # fmt: skip
    path = tmp_path_factory.mktemp("sdxl")
    pipe.save_pretrained(path)
    return path


def test_lora_on_sdxl_trains_and_reloads(tiny_sdxl_dir, tmp_path):
    pipe = load_pipeline(tiny_sdxl_dir)
    d = render_set(8, seed=2, fixed={"colour": "red"})
    cfg = TrainConfig(max_steps=4, batch_size=4, lr=5e-2, lr_warmup_steps=1, caption_dropout=0.5)
    result = train(pipe, ImageSet(d.images, d.captions, [""] * 8), cfg, tmp_path, progress=False)
    assert np.isfinite(result.loss) and (tmp_path / LORA_WEIGHTS_NAME).is_file()
    sampler = SamplerConfig(num_inference_steps=2, batch_size=2)
    prompts, seeds = ["a red heart", "a shape"], [0, 1]
    trained = sample_images(pipe, prompts, seeds, sampler)
    base = load_pipeline(tiny_sdxl_dir)
    before = sample_images(base, prompts, seeds, sampler)
    load_lora(base, tmp_path)
    after = sample_images(base, prompts, seeds, sampler)
    assert np.abs(before.astype(int) - trained.astype(int)).mean() > 0.5
    np.testing.assert_allclose(after, trained, atol=1)
