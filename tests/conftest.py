import os

# Set before anything imports huggingface_hub: a from_pretrained on a missing path must fail at once, not retry
# the hub for a minute.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import shutil  # noqa: E402

import numpy as np  # noqa: E402
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


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory, tiny_tokenizer_dir):
    """A randomly initialised tiny transformers CLIPModel folder with tokenizer and image processor config."""
    from transformers import CLIPTokenizer

    from finexl.toyworld.clip import ToyClipConfig, build_clip_model
    from finexl.utils import data_dir

    torch.manual_seed(1)
    tokenizer = CLIPTokenizer.from_pretrained(tiny_tokenizer_dir)
    model = build_clip_model(
        len(tokenizer), ToyClipConfig(hidden_size=32, num_layers=1, num_heads=2, projection_dim=16),
        tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id,
    )  # fmt: skip
    path = tmp_path_factory.mktemp("clip")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    shutil.copy(data_dir() / "toy_clip" / "preprocessor_config.json", path)
    return path


@pytest.fixture(scope="session")
def tiny_lora_dir(tmp_path_factory, tiny_pipeline_dir):
    """A LoRA trained a few steps on the tiny pipeline (red images), as `finexl train lora` saves it."""
    from finexl.loading import load_pipeline
    from finexl.toyworld.dataset import render_set
    from finexl.train.data import ImageSet
    from finexl.train.trainer import TrainConfig, train

    pipe = load_pipeline(tiny_pipeline_dir)
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    data = render_set(8, seed=3, size=32, fixed={"colour": "red"})
    images = data.images[:, :size, :size] if size < 32 else data.images
    out = tmp_path_factory.mktemp("lora")
    train(pipe, ImageSet(np.ascontiguousarray(images), list(data.captions), [str(i) for i in range(8)]),
          TrainConfig(max_steps=3, batch_size=4, lr=5e-2), out, progress=False)  # fmt: skip
    return out


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory):
    """One image cache for the tests that run the toy world's defaults (the README's commands): made once."""
    return tmp_path_factory.mktemp("finexl-cache")


# the README's command, with every default: the pages and the README's screenshot are of what a user gets
EXPLAIN = ["explain", "--lora", "toy:red", "--threads", "2", "-q"]


@pytest.fixture(scope="session")
def red_folder(tmp_path_factory, shared_cache):
    """``finexl explain --lora toy:red --out DIR``, the README's command, made once: the tests only read it."""
    from finexl.cli import main

    root = tmp_path_factory.mktemp("red")
    assert main([*EXPLAIN, "--cache", str(shared_cache), "--out", str(root / "red")]) == 0
    return root / "red"
