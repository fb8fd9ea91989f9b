"""The personalization trainer on a tiny randomly initialised pipeline: outputs, exact resume, kills, options."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from finexl.loading import LORA_WEIGHTS_NAME, load_lora, load_pipeline
from finexl.records import TRAIN_RECORD
from finexl.sampling import SamplerConfig, sample_images
from finexl.toyworld.dataset import render_set
from finexl.train.checkpoint import CheckpointError, list_checkpoints
from finexl.train.data import DataError, ImageSet
from finexl.train.trainer import TrainConfig, train

SAMPLER = SamplerConfig(num_inference_steps=3, batch_size=4)
PROMPTS, SEEDS = ["a red heart", "a shape", "a blue moon", "a striped background"], [0, 1, 2, 3]


def toy_data(n=16, seed=5, **fixed) -> ImageSet:
    d = render_set(n, seed=seed, fixed=fixed)
    return ImageSet(d.images, d.captions, [f"{i}.png" for i in range(n)])


def quick(**kw) -> TrainConfig:
    base = dict(max_steps=6, batch_size=8, lr=5e-2, lr_warmup_steps=1)
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def trained(tiny_pipeline_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("lora")
    pipe = load_pipeline(tiny_pipeline_dir)
    # alpha != rank: loading must apply alpha / r, not assume alpha == r.
    cfg = quick(rank=4, alpha=8.0, snapshot_steps=(2, 4), validation_prompts=("a shape",), validation_steps=3)
    train(pipe, toy_data(colour="red"), cfg, out, progress=False)
    return out, sample_images(pipe, PROMPTS, SEEDS, SAMPLER)


def test_lora_file_records_rank_alpha_and_config(trained):
    from safetensors import safe_open

    out, _ = trained
    with safe_open(out / LORA_WEIGHTS_NAME, framework="pt") as f:
        keys, metadata = list(f.keys()), f.metadata()
    assert keys and all(k.startswith("unet.") and "lora" in k for k in keys)
    adapter = json.loads(metadata["lora_adapter_metadata"])
    assert adapter["unet.r"] == 4 and adapter["unet.lora_alpha"] == 8.0
    record = json.loads((out / TRAIN_RECORD).read_text())
    assert record["steps_done"] == 6 and record["rank"] == 4 and np.isfinite(record["final_loss"])


def test_load_lora_weights_reproduces_the_trained_model(trained, tiny_pipeline_dir):
    out, trained_images = trained
    base = load_pipeline(tiny_pipeline_dir)
    base_images = sample_images(base, PROMPTS, SEEDS, SAMPLER)
    # The LoRA really changes the model (so the comparisons below can fail) ...
    assert np.abs(base_images.astype(int) - trained_images.astype(int)).mean() > 1.0
    # ... and diffusers' own loader on a fresh base reproduces the trained model, as does finexl's.
    base.load_lora_weights(out, weight_name=LORA_WEIGHTS_NAME)
    np.testing.assert_allclose(sample_images(base, PROMPTS, SEEDS, SAMPLER), trained_images, atol=1)
    other = load_pipeline(tiny_pipeline_dir)
    load_lora(other, out)
    np.testing.assert_allclose(sample_images(other, PROMPTS, SEEDS, SAMPLER), trained_images, atol=1)
    # Every adapted layer came back, attention and convolutions alike.
    saved = {k.split(".", 1)[1].rsplit(".lora_", 1)[0] for k in load_file(out / LORA_WEIGHTS_NAME)}
    for pipe in (base, other):
        loaded = {n.rsplit(".lora_", 1)[0] for n, _ in pipe.unet.named_parameters() if ".lora_" in n}
        assert loaded == saved and any("conv1" in m for m in saved) and any("to_q" in m for m in saved)


def test_snapshots_and_validation_images(trained):
    out, _ = trained
    snaps = sorted(p.name for p in (out / "snapshots").iterdir())
    assert snaps == ["step-000002", "step-000004"]
    w2 = load_file(out / "snapshots/step-000002" / LORA_WEIGHTS_NAME)
    w6 = load_file(out / LORA_WEIGHTS_NAME)
    assert set(w2) == set(w6) and any(not torch.equal(w2[k], w6[k]) for k in w2)
    assert json.loads((out / "snapshots/step-000004" / TRAIN_RECORD).read_text())["steps_done"] == 4
    assert sorted(p.name for p in (out / "validation").iterdir()) == ["step-000003.png", "step-000006.png"]


def test_resume_continues_the_same_run_exactly(tiny_pipeline_dir, tmp_path):
    data = toy_data()
    # Caption dropout draws from the same checkpointed random stream as batches and noise.
    train(load_pipeline(tiny_pipeline_dir), data, quick(caption_dropout=0.3), tmp_path / "straight", progress=False)
    cut = quick(max_steps=6, checkpointing_steps=3, caption_dropout=0.3)
    # First half: stop after step 3 by training a run whose checkpoint we keep, then resume to 6.
    part = tmp_path / "resumed"
    train(load_pipeline(tiny_pipeline_dir), data, cut, part, progress=False)
    for name in (LORA_WEIGHTS_NAME, TRAIN_RECORD):
        (part / name).unlink()
    assert [s for s, _ in list_checkpoints(part)] == [3, 6]  # the last step is checkpointed too
    shutil.rmtree(dict(list_checkpoints(part))[6])  # as if the run had stopped after step 3
    assert [s for s, _ in list_checkpoints(part)] == [3]
    result = train(load_pipeline(tiny_pipeline_dir), data, cut, part, resume=True, progress=False)
    assert result.resumed_from == 3 and len(result.step_seconds) == 3
    a, b = load_file(tmp_path / "straight" / LORA_WEIGHTS_NAME), load_file(part / LORA_WEIGHTS_NAME)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)


def test_resume_refuses_another_configuration_or_data(tiny_pipeline_dir, tmp_path):
    data = toy_data()
    train(load_pipeline(tiny_pipeline_dir), data, quick(checkpointing_steps=2), tmp_path, progress=False)
    with pytest.raises(CheckpointError, match=r"config\.lr: checkpoint 0\.05, now 0\.01"):
        train(load_pipeline(tiny_pipeline_dir), data, quick(lr=1e-2), tmp_path, resume=True, progress=False)
    with pytest.raises(CheckpointError, match="data: checkpoint"):
        train(load_pipeline(tiny_pipeline_dir), toy_data(seed=9), quick(), tmp_path, resume=True, progress=False)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        train(load_pipeline(tiny_pipeline_dir), data, quick(), tmp_path / "empty", resume=True, progress=False)


def test_damaged_checkpoint_is_named(tiny_pipeline_dir, tmp_path):
    data = toy_data()
    train(load_pipeline(tiny_pipeline_dir), data, quick(checkpointing_steps=2), tmp_path, progress=False)
    latest = list_checkpoints(tmp_path)[-1][1]
    weights = latest / "trainable.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=f"checkpoint {latest} is damaged"):
        train(load_pipeline(tiny_pipeline_dir), data, quick(), tmp_path, resume=True, progress=False)


KILLED_RUN = """
import os, signal, sys
import numpy as np
import finexl.train.checkpoint as ck
from finexl.loading import load_pipeline
from finexl.toyworld.dataset import render_set
from finexl.train.data import ImageSet
from finexl.train.trainer import TrainConfig, train

pipeline_dir, out = sys.argv[1], sys.argv[2]
real_save, calls = ck.save_file, [0]

def save_then_die(tensors, filename):
    # The third checkpoint: write part of the file, then the process is killed mid-save.
    calls[0] += 1
    if calls[0] == 3:
        real_save(tensors, filename)
        with open(filename, "r+b") as f:
            f.truncate(64)
        os.kill(os.getpid(), signal.SIGKILL)
    real_save(tensors, filename)

ck.save_file = save_then_die
d = render_set(16, seed=5)
cfg = TrainConfig(max_steps=6, batch_size=8, lr=5e-2, lr_warmup_steps=1, checkpointing_steps=1)
train(load_pipeline(pipeline_dir), ImageSet(d.images, d.captions, [""] * 16), cfg, out, progress=False)
"""


def test_sigkill_mid_save_leaves_whole_checkpoints_and_resumes(tiny_pipeline_dir, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(KILLED_RUN), str(tiny_pipeline_dir), str(out)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    # Checkpoints 1 and 2 are whole; the one being written when the kill came is not visible as a checkpoint.
    assert [s for s, _ in list_checkpoints(out)] == [1, 2]
    leftovers = [p.name for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]
    assert leftovers and all(n.endswith(".tmp") for n in leftovers)
    assert not (out / LORA_WEIGHTS_NAME).exists()
    # Resuming removes the half-written folder and finishes the run exactly as an uninterrupted one.
    d = render_set(16, seed=5)
    data = ImageSet(d.images, d.captions, [""] * 16)
    cfg = TrainConfig(max_steps=6, batch_size=8, lr=5e-2, lr_warmup_steps=1, checkpointing_steps=1)
    result = train(load_pipeline(tiny_pipeline_dir), data, cfg, out, resume=True, progress=False)
    assert result.resumed_from == 2
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]
    straight = tmp_path / "straight"
    train(load_pipeline(tiny_pipeline_dir), data, TrainConfig(**{**cfg.to_dict(), "checkpointing_steps": 0}),
          straight, progress=False)  # fmt: skip
    a, b = load_file(straight / LORA_WEIGHTS_NAME), load_file(out / LORA_WEIGHTS_NAME)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)


def test_gradient_accumulation_and_checkpointing_keep_the_maths(tiny_pipeline_dir, tmp_path):
    data = toy_data()
    plain = tmp_path / "plain"
    train(load_pipeline(tiny_pipeline_dir), data, quick(max_steps=2), plain, progress=False)
    ckpt = tmp_path / "ckpt"
    train(load_pipeline(tiny_pipeline_dir), data, quick(max_steps=2, gradient_checkpointing=True), ckpt,
          progress=False)  # fmt: skip
    a, b = load_file(plain / LORA_WEIGHTS_NAME), load_file(ckpt / LORA_WEIGHTS_NAME)
    for k in a:  # recomputing activations does not change the gradients
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6)
    acc = tmp_path / "acc"
    result = train(load_pipeline(tiny_pipeline_dir), data, quick(max_steps=2, batch_size=4,
                   gradient_accumulation_steps=2), acc, progress=False)  # fmt: skip
    assert np.isfinite(result.loss) and len(result.step_seconds) == 2


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_keeps_trainable_weights_float32(tiny_pipeline_dir, tmp_path, precision):
    pipe = load_pipeline(tiny_pipeline_dir)
    result = train(pipe, toy_data(), quick(max_steps=2, mixed_precision=precision), tmp_path, progress=False)
    assert np.isfinite(result.loss)
    lora = [p for n, p in pipe.unet.named_parameters() if "lora" in n]
    frozen = [p for n, p in pipe.unet.named_parameters() if "lora" not in n]
    assert lora and all(p.dtype == torch.float32 for p in lora)
    assert all(p.dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[precision] for p in frozen)
    assert all(v.dtype == torch.float32 for v in load_file(tmp_path / LORA_WEIGHTS_NAME).values())


def test_text_encoder_lora_is_saved_and_reloaded(tiny_pipeline_dir, tmp_path):
    pipe = load_pipeline(tiny_pipeline_dir)
    train(pipe, toy_data(), quick(train_text_encoder=True), tmp_path, progress=False)
    keys = list(load_file(tmp_path / LORA_WEIGHTS_NAME))
    assert any(k.startswith("text_encoder.") for k in keys) and any(k.startswith("unet.") for k in keys)
    trained_images = sample_images(pipe, PROMPTS, SEEDS, SAMPLER)
    base = load_pipeline(tiny_pipeline_dir)
    base.load_lora_weights(tmp_path, weight_name=LORA_WEIGHTS_NAME)
    np.testing.assert_allclose(sample_images(base, PROMPTS, SEEDS, SAMPLER), trained_images, atol=1)


def test_bad_training_input_is_named(tiny_pipeline_dir, tmp_path):
    pipe = load_pipeline(tiny_pipeline_dir)
    data = toy_data(n=4)
    with pytest.raises(DataError, match="one caption per image"):
        train(pipe, ImageSet(data.images, data.captions[:3], data.files), quick(), tmp_path / "a", progress=False)
    with pytest.raises(DataError, match="no training images"):
        train(pipe, ImageSet(data.images[:0], [], []), quick(), tmp_path / "b", progress=False)
    big = render_set(2, seed=0, size=48)
    with pytest.raises(DataError, match="pass --resolution 48"):
        train(pipe, ImageSet(big.images, big.captions, ["a", "b"]), quick(), tmp_path / "c", progress=False)
    with pytest.raises(ValueError, match="rank must be >= 1"):
        TrainConfig(rank=0)
    with pytest.raises(ValueError, match="snapshot steps must lie"):
        TrainConfig(max_steps=10, snapshot_steps=(5, 20))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_training_at_another_resolution(tiny_pipeline_dir, tmp_path):
    big = render_set(4, seed=0, size=48)
    cfg = quick(max_steps=1, resolution=48, validation_prompts=("a shape",), validation_steps=1)
    train(load_pipeline(tiny_pipeline_dir), ImageSet(big.images, big.captions, list("abcd")), cfg, tmp_path,
          progress=False)  # fmt: skip
    from PIL import Image

    assert Image.open(tmp_path / "validation" / "step-000001.png").size == (48, 48)


def test_gradient_accumulation_gives_the_gradient_of_one_large_batch(tiny_pipeline_dir):
    """Two micro-batches of 2 accumulated are the gradient of one batch of 4: each micro-batch loss is divided by
    their number (without it the gradient doubles; the mutant fails here)."""
    from dataclasses import replace

    from finexl.train.trainer import TrainingRun, encode_conditioning, training_target

    pipe = load_pipeline(tiny_pipeline_dir)
    run = TrainingRun(pipe, toy_data(8), quick(batch_size=2, gradient_accumulation_steps=2), None, torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    x0 = run.latents[:4]
    noise = torch.randn(x0.shape, generator=g)
    t = torch.randint(0, run.scheduler.config.num_train_timesteps, (4,), generator=g)
    with torch.no_grad():
        embeds, _ = encode_conditioning(pipe, run.captions[:4], run.resolution)
    noisy = run.scheduler.add_noise(x0, noise, t)
    target = training_target(run.scheduler, x0, noise, t)

    def loss_of(rows):
        def micro_batch(i):
            sl = rows[i]
            pred = pipe.unet(noisy[sl], t[sl], encoder_hidden_states=embeds[sl]).sample
            return torch.nn.functional.mse_loss(pred, target[sl])

        return micro_batch

    def gradients():
        out = {k: p.grad.detach().clone() for k, p in run.params.items() if p.grad is not None}
        for p in run.params.values():
            p.grad = None
        return out

    accumulated_loss = run.accumulate_gradients(loss_of([slice(0, 2), slice(2, 4)]))
    accumulated = gradients()
    run.cfg = replace(run.cfg, batch_size=4, gradient_accumulation_steps=1)
    large_loss = run.accumulate_gradients(loss_of([slice(0, 4)]))
    large = gradients()
    assert accumulated.keys() == large.keys() and len(large) > 0
    assert accumulated_loss == pytest.approx(large_loss, rel=1e-5)
    for k in large:
        torch.testing.assert_close(accumulated[k], large[k], rtol=1e-4, atol=1e-7)
    assert max(float(v.abs().max()) for v in large.values()) > 0  # a gradient to compare
