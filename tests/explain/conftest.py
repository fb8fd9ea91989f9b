import shutil

import numpy as np
import pytest
import torch


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
