"""The three trainers run a few steps at tiny sizes, save, and load back through the public loaders."""

import json

import numpy as np
import pytest
import torch

from finexl.sampling import SamplerConfig, sample_images
from finexl.toyworld.aspects import CATEGORICAL, GRADED
from finexl.toyworld.clip import ToyClipConfig, ToyClipTrainConfig, embed_images, load_toy_clip, train_toy_clip
from finexl.toyworld.dataset import render_set
from finexl.toyworld.diffusion import (
    ToyDiffusionTrainConfig,
    ToyUnetConfig,
    ToyVaeTrainConfig,
    load_toy_pipeline,
    train_toy_diffusion,
    train_toy_vae,
)
from finexl.toyworld.judge import JudgeConfig, JudgeTrainConfig, load_judge, read_images, train_judge

TINY_CLIP = ToyClipConfig(hidden_size=32, num_layers=1, num_heads=2, projection_dim=16)
TINY_UNET = ToyUnetConfig(block_out_channels=(16, 32, 32), attention_heads=2)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory, tiny_tokenizer_dir):
    root = tmp_path_factory.mktemp("models")
    clip_cfg = ToyClipTrainConfig(model=TINY_CLIP, n_images=64, steps=3, batch_size=16, warmup=1)
    train_toy_clip(root / "clip", clip_cfg, tiny_tokenizer_dir, progress=False)
    vae_cfg = ToyVaeTrainConfig(block_out_channels=(16, 32), n_images=32, steps=2, batch_size=8, warmup=1)
    train_toy_vae(root / "vae", vae_cfg, progress=False)
    judge_cfg = JudgeTrainConfig(model=JudgeConfig(width=8, hidden=32), n_images=64, steps=3, batch_size=16, warmup=1)
    train_judge(root / "judge", judge_cfg, root / "vae", progress=False)
    sd_cfg = ToyDiffusionTrainConfig(
        unet=TINY_UNET,
        n_images=32,
        steps=3,
        batch_size=4,
        warmup=1,
    )
    train_toy_diffusion(root / "sd", sd_cfg, root / "vae", root / "clip", progress=False)
    return root


def test_clip_trains_saves_and_loads(tiny_models):
    model, tokenizer = load_toy_clip(tiny_models / "clip")
    emb = embed_images(model, render_set(5, seed=1).images)
    assert emb.shape == (5, TINY_CLIP.projection_dim)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(5))
    record = json.loads((tiny_models / "clip" / "finexl_train_config.json").read_text())
    assert record["steps_done"] == 3 and record["model"]["hidden_size"] == 32


def test_vae_records_its_scaling_factor(tiny_models):
    config = json.loads((tiny_models / "vae" / "config.json").read_text())
    assert config["scaling_factor"] != 0.18215  # replaced by 1 / std of this VAE's latents
    assert config["scaling_factor"] > 0


def test_judge_reads_every_aspect(tiny_models):
    judge = load_judge(tiny_models / "judge")
    reading = read_images(judge, render_set(6, seed=2).images)
    assert set(reading.categorical) == {"shape", "colour", "pose", "position", "fill", "background", "pattern"}
    assert all(len(v) == 6 for v in reading.categorical.values())
    assert all(((v >= 0) & (v <= 1)).all() for v in reading.graded.values())
    np.testing.assert_allclose(reading.probabilities["colour"].sum(axis=1), 1.0, rtol=1e-5)


def test_pipeline_is_a_stable_diffusion_folder_and_sampling_is_batch_independent(tiny_models):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_models / "sd")
    assert pipe.vae_scale_factor == 2 and pipe.text_encoder.config.hidden_size == 32
    pipe = load_toy_pipeline(tiny_models / "sd")
    cfg = SamplerConfig(num_inference_steps=3, batch_size=4)
    prompts, seeds = ["a red heart", "a blue moon", "a shape", "a heart"], [0, 1, 2, 3]
    together = sample_images(pipe, prompts, seeds, cfg)
    alone = sample_images(pipe, prompts[1:2], seeds[1:2], SamplerConfig(num_inference_steps=3, batch_size=1))
    assert together.shape == (4, 32, 32, 3) and together.dtype == np.uint8
    np.testing.assert_allclose(together[1].astype(int), alone[0].astype(int), atol=1)
    other_seed = sample_images(pipe, prompts[1:2], [99], SamplerConfig(num_inference_steps=3, batch_size=1))
    assert np.abs(other_seed[0].astype(int) - alone[0].astype(int)).mean() > 0.5


def test_sampling_rejects_mismatched_requests(tiny_models):
    pipe = load_toy_pipeline(tiny_models / "sd")
    with pytest.raises(ValueError, match="one seed per prompt"):
        sample_images(pipe, ["a", "b"], [0])
    with pytest.raises(ValueError, match="no prompts"):
        sample_images(pipe, [], [])


def test_loaders_name_missing_and_corrupt_files(tiny_models, tmp_path):
    import shutil

    with pytest.raises(FileNotFoundError, match="no toy CLIP"):
        load_toy_clip(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        load_toy_pipeline(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="judge file"):
        load_judge(tmp_path / "nowhere")
    bad = tmp_path / "judge"
    shutil.copytree(tiny_models / "judge", bad)
    (bad / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="corrupt"):
        load_judge(bad)
    bad_clip = tmp_path / "clip"
    shutil.copytree(tiny_models / "clip", bad_clip)
    data = (bad_clip / "model.safetensors").read_bytes()
    (bad_clip / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="could not load the toy CLIP"):
        load_toy_clip(bad_clip)


def test_minimal_pairs_differ_in_exactly_the_named_aspect():
    from finexl.toyworld.clip import render_minimal_pairs

    images, aspects, varied = render_minimal_pairs(20, seed=0, size=32)
    assert images.shape == (40, 32, 32, 3)
    for i in range(20):
        a, b = aspects[2 * i].to_dict(), aspects[2 * i + 1].to_dict()
        differing = [k for k in a if a[k] != b[k]]
        assert differing == [varied[2 * i]]


def test_multi_positive_loss_reduces_to_infonce_and_rewards_all_true_images():
    import torch.nn.functional as F

    from finexl.toyworld.clip import multi_positive_loss

    logits = torch.randn(4, 4, generator=torch.Generator().manual_seed(0))
    eye = torch.eye(4, dtype=torch.bool)
    infonce = (F.cross_entropy(logits, torch.arange(4)) + F.cross_entropy(logits.T, torch.arange(4))) / 2
    torch.testing.assert_close(multi_positive_loss(logits, eye), infonce)
    # Caption 0 is true of images 0 and 1: scoring image 1 high must lower the loss when it counts as positive.
    compatible = eye.clone()
    compatible[0, 1] = True
    high = logits.clone()
    high[0, 1] = 10.0
    assert multi_positive_loss(high, compatible) < multi_positive_loss(high, eye)


def test_eval_command_runs_in_process_on_tiny_models(tiny_models, tmp_path, capsys):
    import json

    from finexl.cli import main

    out_json, grids = tmp_path / "eval.json", tmp_path / "grids"
    argv = [
        "toyworld",
        "eval",
        "--pipeline",
        str(tiny_models / "sd"),
        "--clip",
        str(tiny_models / "clip"),
        "--judge",
        str(tiny_models / "judge"),
        "--n-held-out",
        "20",
        "--n-per-value",
        "2",
        "--n-neutral",
        "8",
        "--steps",
        "2",
        "--json",
        str(out_json),
        "--grids",
        str(grids),
        "-q",
    ]
    assert main(argv) == 0
    result = json.loads(out_json.read_text())
    assert set(result["adherence"]) == {a.name for a in CATEGORICAL} | {a.name for a in GRADED}
    assert all(0.0 <= v <= 1.0 for v in result["adherence"].values())
    assert set(result["adherence_per_value"]["shape"]) == set(CATEGORICAL[0].values)
    assert all(0.0 <= v <= 1.0 for v in result["neutral_entropy"].values())
    assert sorted(p.name for p in grids.iterdir()) == sorted(
        [f"{a.name}.png" for a in CATEGORICAL] + [f"{a.name}.png" for a in GRADED] + ["neutral.png"]
    )
    table = capsys.readouterr().out
    assert "| shape |" in table and "T2I adherence" in table


def test_eval_command_names_a_missing_model(tmp_path, capsys):
    from finexl.cli import main

    assert main(["toyworld", "eval", "--judge", str(tmp_path / "nope"), "-q"]) == 2
    assert "judge file" in capsys.readouterr().err


def test_hard_batches_share_the_easy_aspects_and_captions_skip_them(tiny_tokenizer_dir, tmp_path):
    from finexl.toyworld.clip import HARD_BATCH_SHARED, hard_batch

    pixels, aspects, captions = hard_batch(16, np.random.default_rng(0), 32)
    assert pixels.shape == (16, 3, 32, 32)
    for name in HARD_BATCH_SHARED:
        assert len({getattr(a, name) for a in aspects}) == 1
    assert all(m.aspect not in HARD_BATCH_SHARED for _, mentions in captions for m in mentions)
    assert len({a.shape for a in aspects}) > 1
    cfg = ToyClipTrainConfig(model=TINY_CLIP, n_images=32, steps=2, batch_size=8, warmup=1, hard_batch_fraction=1.0)
    train_toy_clip(tmp_path / "clip", cfg, tiny_tokenizer_dir, progress=False)
    assert (tmp_path / "clip" / "model.safetensors").is_file()


def test_group_batches_vary_one_aspect_within_each_group_and_name_it(tiny_tokenizer_dir, tmp_path):
    from finexl.toyworld.aspects import CATEGORICAL_BY_NAME
    from finexl.toyworld.clip import group_batch

    seen = set()
    for seed in range(6):  # both aspects get drawn over a few seeds
        pixels, aspects, captions = group_batch(17, np.random.default_rng(seed), 32)
        name = "pose" if len(aspects) == 16 else "shape"  # 4 groups of 4 poses, or 3 groups of 5 shapes
        seen.add(name)
        k = len(CATEGORICAL_BY_NAME[name].values)
        assert pixels.shape == (17 // k * k, 3, 32, 32)
        for g in range(0, len(aspects), k):
            group = aspects[g : g + k]
            assert sorted(getattr(a, name) for a in group) == sorted(CATEGORICAL_BY_NAME[name].values)
            assert len({a.replace(**{name: getattr(group[0], name)}) for a in group}) == 1  # all else equal
        assert all(any(m.aspect == name for m in mentions) for _, mentions in captions)
    assert seen == {"pose", "shape"}
    cfg = ToyClipTrainConfig(model=TINY_CLIP, n_images=32, steps=2, batch_size=8, warmup=1, group_batch_fraction=1.0)
    train_toy_clip(tmp_path / "clip", cfg, tiny_tokenizer_dir, progress=False)
    assert (tmp_path / "clip" / "model.safetensors").is_file()


def test_text_encoder_starts_from_the_clip_tower_or_fresh(tiny_models, tmp_path):
    from transformers import CLIPTextModel

    clip, _ = load_toy_clip(tiny_models / "clip")
    cfg = ToyDiffusionTrainConfig(
        unet=TINY_UNET,
        n_images=8,
        steps=1,
        batch_size=4,
        warmup=1,
        lr=1e-9,
        train_text_encoder=False,
    )
    train_toy_diffusion(tmp_path / "copied", cfg, tiny_models / "vae", tiny_models / "clip", progress=False)
    cfg.fresh_text_encoder = True
    train_toy_diffusion(tmp_path / "fresh", cfg, tiny_models / "vae", tiny_models / "clip", progress=False)
    tower = clip.text_model.embeddings.token_embedding.weight
    copied = CLIPTextModel.from_pretrained(tmp_path / "copied" / "text_encoder").embeddings.token_embedding.weight
    fresh = CLIPTextModel.from_pretrained(tmp_path / "fresh" / "text_encoder").embeddings.token_embedding.weight
    torch.testing.assert_close(copied, tower)
    assert (fresh - tower).abs().mean() > 1e-3


def test_continued_pipeline_can_take_the_clip_tower_and_its_tokenizer(tiny_models, tmp_path):
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    clip, clip_tokenizer = load_toy_clip(tiny_models / "clip")
    cfg = ToyDiffusionTrainConfig(
        unet=TINY_UNET, n_images=8, steps=1, batch_size=4, warmup=1, lr=1e-9, train_text_encoder=False,
        init_from=str(tiny_models / "sd"), clip_text_encoder=True,
    )  # fmt: skip
    train_toy_diffusion(tmp_path / "swapped", cfg, tiny_models / "vae", tiny_models / "clip", progress=False)
    tower = clip.text_model.embeddings.token_embedding.weight
    original = CLIPTextModel.from_pretrained(tiny_models / "sd" / "text_encoder").embeddings.token_embedding.weight
    assert (original - tower).abs().max() > 1e-5  # the continued pipeline's encoder had moved away from the tower
    swapped = CLIPTextModel.from_pretrained(tmp_path / "swapped" / "text_encoder").embeddings.token_embedding.weight
    torch.testing.assert_close(swapped, tower)
    assert CLIPTokenizer.from_pretrained(tmp_path / "swapped" / "tokenizer").get_vocab() == clip_tokenizer.get_vocab()
    before = UNet2DConditionModel.from_pretrained(tiny_models / "sd" / "unet").conv_in.weight
    after = UNet2DConditionModel.from_pretrained(tmp_path / "swapped" / "unet").conv_in.weight
    torch.testing.assert_close(after, before, atol=1e-6, rtol=0)  # the UNet is continued, not rebuilt
    record = json.loads((tmp_path / "swapped" / "finexl_train_config.json").read_text())
    previous = json.loads((tiny_models / "sd" / "finexl_train_config.json").read_text())
    assert record["clip_text_encoder"] and record["continued_from"] == previous  # the run it continued, nested
    with pytest.raises(ValueError, match="init_from"):
        ToyDiffusionTrainConfig(clip_text_encoder=True)
    with pytest.raises(ValueError, match="exclude"):
        ToyDiffusionTrainConfig(init_from="x", clip_text_encoder=True, fresh_text_encoder=True)


def test_continued_clip_and_judge_record_the_run_they_continued(tiny_models, tiny_tokenizer_dir, tmp_path):
    clip_cfg = ToyClipTrainConfig(
        model=TINY_CLIP, n_images=16, steps=1, batch_size=8, warmup=1, init_from=str(tiny_models / "clip")
    )
    train_toy_clip(tmp_path / "clip", clip_cfg, tiny_tokenizer_dir, progress=False)
    judge_cfg = JudgeTrainConfig(
        model=JudgeConfig(width=8, hidden=32), n_images=16, steps=1, batch_size=8, warmup=1,
        init_from=str(tiny_models / "judge"),
    )  # fmt: skip
    train_judge(tmp_path / "judge", judge_cfg, tiny_models / "vae", progress=False)
    for name in ("clip", "judge"):
        record = json.loads((tmp_path / name / "finexl_train_config.json").read_text())
        previous = json.loads((tiny_models / name / "finexl_train_config.json").read_text())
        assert record["steps_done"] == 1 and record["continued_from"] == previous
        assert "continued_from" not in previous  # trained from scratch: nothing to nest
