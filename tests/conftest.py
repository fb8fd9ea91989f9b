import os

# Set before anything imports huggingface_hub: a from_pretrained on a missing path must fail at once, not retry
# the hub for a minute.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    torch.set_num_threads(2)
    yield


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory):
    from finexl.toyworld.tokenizer import build_tokenizer

    path = tmp_path_factory.mktemp("tokenizer")
    build_tokenizer(path, seed=0)
    return path


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory, tiny_tokenizer_dir):
    """A randomly initialised toy-sized StableDiffusionPipeline folder (real classes, no training)."""
    from transformers import CLIPTokenizer

    from finexl.toyworld.clip import ToyClipConfig, build_clip_model
    from finexl.toyworld.diffusion import (
        ToyUnetConfig,
        ToyVaeTrainConfig,
        build_unet,
        build_vae,
        make_pipeline,
        text_encoder_from_clip,
    )

    torch.manual_seed(0)
    tokenizer = CLIPTokenizer.from_pretrained(tiny_tokenizer_dir)
    clip = build_clip_model(
        len(tokenizer),
        ToyClipConfig(hidden_size=32, num_layers=1, num_heads=2, projection_dim=16),
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
    )
    vae = build_vae(ToyVaeTrainConfig(block_out_channels=(16, 32)))
    unet = build_unet(ToyUnetConfig(block_out_channels=(16, 32, 32), attention_heads=2), 16, 4, 32)
    path = tmp_path_factory.mktemp("pipeline")
    make_pipeline(vae, text_encoder_from_clip(clip), tokenizer, unet).save_pretrained(path)
    return path
