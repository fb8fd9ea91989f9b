"""DreamBooth: class images generated once by the base, prior loss, full-UNet pipeline folder or LoRA."""

import numpy as np
import pytest
import torch

from finexl.loading import load_pipeline
from finexl.sampling import SamplerConfig
from finexl.toyworld.dataset import render_set
from finexl.train.data import ImageSet
from finexl.train.dreambooth import ensure_class_images
from finexl.train.trainer import TrainConfig, train

SAMPLER = SamplerConfig(num_inference_steps=2, batch_size=4)


def instance_images(n=6):
    d = render_set(n, seed=3, fixed={"shape": "heart", "colour": "purple"})
    return ImageSet(d.images, None, [f"{i}.png" for i in range(n)])


def test_class_images_are_generated_once_then_reused(tiny_pipeline_dir, tmp_path):
    pipe = load_pipeline(tiny_pipeline_dir)
    first = ensure_class_images(pipe, tmp_path / "cls", "a shape", 3, 32, sampler=SAMPLER, progress=False)
    assert first.images.shape == (3, 32, 32, 3)
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "cls").iterdir()}
    again = ensure_class_images(pipe, tmp_path / "cls", "a shape", 3, 32, sampler=SAMPLER, progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "cls").iterdir()} == stamps
    np.testing.assert_array_equal(first.images, again.images)
    more = ensure_class_images(pipe, tmp_path / "cls", "a shape", 5, 32, sampler=SAMPLER, progress=False)
    assert len(more) == 5 and len(list((tmp_path / "cls").glob("*.png"))) == 5
    with pytest.raises(ValueError, match="non-empty class prompt"):
        ensure_class_images(pipe, tmp_path / "x", " ", 3, 32, sampler=SAMPLER)


def test_full_dreambooth_saves_a_loadable_pipeline(tiny_pipeline_dir, tmp_path):
    pipe = load_pipeline(tiny_pipeline_dir)
    class_data = ensure_class_images(pipe, tmp_path / "cls", "a shape", 4, 32, sampler=SAMPLER, progress=False)
    cfg = TrainConfig(
        method="full", instance_prompt="a sks shape", class_prompt="a shape", prior_loss_weight=1.0,
        max_steps=3, batch_size=4, lr=1e-3, lr_warmup_steps=1,
    )  # fmt: skip
    train(pipe, instance_images(), cfg, tmp_path / "out", class_data=class_data, progress=False)
    tuned = load_pipeline(tmp_path / "out")
    base = load_pipeline(tiny_pipeline_dir)
    changed = [
        not torch.equal(a, b)
        for a, b in zip(tuned.unet.state_dict().values(), base.unet.state_dict().values(), strict=True)
    ]
    assert any(changed) and len(changed) == len(base.unet.state_dict())
    for a, b in zip(tuned.vae.state_dict().values(), base.vae.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # only the UNet is trained


def test_prior_loss_weight_changes_the_result(tiny_pipeline_dir, tmp_path):
    from safetensors.torch import load_file

    pipe = load_pipeline(tiny_pipeline_dir)
    class_data = ensure_class_images(pipe, tmp_path / "cls", "a shape", 4, 32, sampler=SAMPLER, progress=False)
    results = []
    for w in (0.0, 1.0):
        cfg = TrainConfig(instance_prompt="a sks shape", class_prompt="a shape", prior_loss_weight=w, max_steps=2,
                          batch_size=4, lr=1e-2, lr_warmup_steps=1)  # fmt: skip
        out = tmp_path / f"w{w}"
        train(load_pipeline(tiny_pipeline_dir), instance_images(), cfg, out, class_data=class_data, progress=False)
        results.append(load_file(out / "pytorch_lora_weights.safetensors"))
    assert any(not torch.equal(results[0][k], results[1][k]) for k in results[0])
