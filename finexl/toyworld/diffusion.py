"""The toy text-to-image model: a real ``StableDiffusionPipeline`` with tiny components, trained on the toy world.

* VAE: ``AutoencoderKL`` mapping 32x32x3 images to 16x16x4 latents (one downsampling), trained for reconstruction.
* Text encoder and tokenizer: a ``CLIPTextModel`` of the toy CLIP's text architecture, started from its tower (or
  from random weights) and by default trained with the UNet; frozen afterwards like any Stable Diffusion text encoder.
* UNet: ``UNet2DConditionModel`` on 16x16 latents with cross-attention at 8x8 and 4x4 only (attention at full
  resolution costs most of the time on a CPU), v-prediction on a cosine noise schedule, min-SNR loss weighting,
  EMA weights, caption dropout for classifier-free guidance.

The saved folder loads with ``StableDiffusionPipeline.from_pretrained(dir)`` like any Stable Diffusion folder.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from finexl.config import Config, setting
from finexl.loading import load_pipeline
from finexl.records import read_train_record, train_record, write_train_record
from finexl.toyworld.captions import caption
from finexl.toyworld.clip import load_toy_clip
from finexl.toyworld.dataset import render_set
from finexl.utils import (
    TrainingClock,
    atomic_dir,
    encode_prompts,
    images_to_tensor,
    seed_everything,
)

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------------
# VAE


@dataclass
class ToyVaeTrainConfig(Config):
    image_size: int = setting(32, help="image resolution")
    block_out_channels: tuple[int, ...] = setting((32, 64), help="channels of each block")
    latent_channels: int = setting(4, help="channels of the latent")
    n_images: int = setting(20000, help="rendered training images")
    steps: int = setting(4000, help="optimizer steps")
    max_minutes: float = setting(
        1e9,
        help="wall-clock limit; the schedule anneals to whichever ends first: steps or minutes",
    )
    batch_size: int = setting(32, help="images per step")
    lr: float = setting(1e-3, help="learning rate")
    kl_weight: float = setting(1e-6, help="weight of the KL term")
    warmup: int = setting(100, help="warm-up steps")
    seed: int = setting(0, help="random seed")


def build_vae(cfg: ToyVaeTrainConfig):
    from diffusers import AutoencoderKL

    n = len(cfg.block_out_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(cfg.block_out_channels),
        layers_per_block=1,
        latent_channels=cfg.latent_channels,
        norm_num_groups=16,
        sample_size=cfg.image_size,
        mid_block_add_attention=False,  # attention at 16x16 costs more than it gives on these images
    )


def train_toy_vae(out_dir: str | Path, cfg: ToyVaeTrainConfig, progress: bool = True):
    """Train the toy VAE for reconstruction and save it (diffusers format) to ``out_dir``.

    The ``scaling_factor`` in its config is set to 1 / std of the latents, as Stable Diffusion's is.
    """
    seed_everything(cfg.seed)
    vae = build_vae(cfg)
    logger.info("toy VAE: %.2f M parameters", sum(p.numel() for p in vae.parameters()) / 1e6)
    data = render_set(cfg.n_images, seed=cfg.seed + 100, size=cfg.image_size, progress=progress)
    pixels = images_to_tensor(data.images)
    rng = np.random.default_rng(cfg.seed)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.lr, weight_decay=0.0)
    clock = TrainingClock(cfg.steps, cfg.max_minutes, cfg.warmup, cfg.lr)
    vae.train()
    bar = tqdm(range(cfg.steps), desc="toy VAE", disable=not progress)
    for step in bar:
        clock.set_lr(opt, step)
        x = pixels[rng.choice(len(pixels), size=cfg.batch_size, replace=False)]
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample()).sample
        rec = F.l1_loss(recon, x) + F.mse_loss(recon, x)
        loss = rec + cfg.kl_weight * posterior.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        bar.set_postfix(rec=f"{rec.item():.4f}")
        if step % 100 == 0:
            logger.info("step %d reconstruction %.4f (%.0f s)", step, rec.item(), clock.elapsed())
        if clock.done(step):
            break
    vae.eval()
    with torch.no_grad():
        latents = vae.encode(pixels[:2000]).latent_dist.mean
        recon = vae.decode(latents).sample
        mae = (recon - pixels[:2000]).abs().mean().item() * 127.5
    vae.register_to_config(scaling_factor=float(1.0 / latents.std()))
    logger.info("toy VAE: scaling factor %.4f, reconstruction MAE %.2f / 255", 1.0 / latents.std(), mae)
    with atomic_dir(out_dir) as tmp:
        vae.save_pretrained(tmp)
        write_train_record(tmp, train_record(cfg, step + 1, clock.elapsed(), recon_mae_255=mae))
    return vae


# ----------------------------------------------------------------------------------------------------------------
# UNet and pipeline


@dataclass
class ToyUnetConfig(Config):
    block_out_channels: tuple[int, ...] = setting((32, 64, 128), help="channels of each block")
    layers_per_block: int = setting(1, help="ResNet layers per block")
    attention_heads: int = setting(4, help="attention heads")


@dataclass
class ToyDiffusionTrainConfig(Config):
    unet: ToyUnetConfig = setting(default_factory=ToyUnetConfig, help="the UNet's architecture")
    image_size: int = setting(32, help="image resolution")
    n_images: int = setting(60000, help="rendered training images")
    steps: int = setting(100000, help="optimizer steps")
    max_minutes: float = setting(
        1e9,
        help="wall-clock limit; the schedule anneals to whichever ends first: steps or minutes",
    )
    batch_size: int = setting(32, help="images per step")
    lr: float = setting(5e-4, help="learning rate")
    warmup: int = setting(500, help="warm-up steps")
    caption_dropout: float = setting(0.1, help="fraction of captions replaced by the empty prompt")
    min_snr_gamma: float = setting(5.0, help="min-SNR loss weighting gamma")
    ema_decay: float = setting(0.999, help="decay of the EMA weights that are saved")
    save_every_minutes: float = setting(15.0, help="minutes between saves of the pipeline")
    init_from: str | None = setting(
        None,
        kind=str,
        help="a pipeline folder whose UNet and text encoder to continue training",
    )
    train_text_encoder: bool = setting(
        True,
        help="The text encoder starts as the toy CLIP's text tower; trained with the UNet it learns to keep apart the"
        " words that the CLIP loss left collapsed (shape, pose, position). Its learning rate is this fraction of"
        " the UNet's.",
    )
    text_encoder_lr_scale: float = setting(0.3, help="the text encoder's learning rate as a fraction of the UNet's")
    fresh_text_encoder: bool = setting(
        False,
        help="Start the text encoder from random weights (the toy CLIP's text architecture and tokenizer) instead of "
        "its trained tower: a tower whose contrastive training collapsed some words cannot be trained back apart"
        " quickly.",
    )
    clip_text_encoder: bool = setting(
        False,
        help="Continue the UNet of ``init_from`` with the toy CLIP's text tower and tokenizer in place of the "
        "pipeline's text encoder (freeze it with ``train_text_encoder=False``): a text encoder trained only "
        "through the denoising loss lets the words the UNet does not yet use drift together, which the "
        "contrastive tower keeps apart.",
    )
    seed: int = setting(0, help="random seed")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.clip_text_encoder and self.fresh_text_encoder:
            raise ValueError("clip_text_encoder and fresh_text_encoder exclude each other")
        if self.clip_text_encoder and self.init_from is None:
            raise ValueError("clip_text_encoder continues a pipeline: give init_from")


def build_unet(cfg: ToyUnetConfig, latent_size: int, latent_channels: int, cross_attention_dim: int):
    from diffusers import UNet2DConditionModel

    n = len(cfg.block_out_channels)
    # Full resolution without attention; every lower resolution with cross-attention on the prompt.
    down = ("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1)
    up = ("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",)
    return UNet2DConditionModel(
        sample_size=latent_size,
        in_channels=latent_channels,
        out_channels=latent_channels,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=tuple(cfg.block_out_channels),
        layers_per_block=cfg.layers_per_block,
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=cfg.attention_heads,  # diffusers reads this as the number of heads in this class
        norm_num_groups=16,
    )


def text_encoder_from_clip(clip_model):
    """A ``CLIPTextModel`` holding the (frozen) text tower of a ``CLIPModel``."""
    from transformers import CLIPTextModel

    text_encoder = CLIPTextModel(clip_model.config.text_config)
    # In transformers >= 5, CLIPModel.text_model is itself a CLIPTextModel with the same keys.
    text_encoder.load_state_dict(clip_model.text_model.state_dict())
    return text_encoder.eval()


def noise_scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        prediction_type="v_prediction",
        clip_sample=False,
        steps_offset=1,
    )


def make_pipeline(vae, text_encoder, tokenizer, unet):
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    scheduler = DDIMScheduler.from_config(noise_scheduler().config, timestep_spacing="trailing")
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def min_snr_weights(scheduler, timesteps: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-gamma loss weights for v-prediction: min(snr, gamma) / (snr + 1)."""
    alphas = scheduler.alphas_cumprod[timesteps]
    snr = alphas / (1 - alphas)
    return torch.clamp(snr, max=gamma) / (snr + 1)


def train_toy_diffusion(
    out_dir: str | Path,
    cfg: ToyDiffusionTrainConfig,
    vae_dir: str | Path,
    clip_dir: str | Path,
    progress: bool = True,
):
    """Train the toy UNet (and text encoder) and save the whole pipeline to ``out_dir`` (checkpoints on the way)."""
    from diffusers import AutoencoderKL

    seed_everything(cfg.seed)
    continued_from = read_train_record(cfg.init_from)  # before any save: out_dir may be the folder continued
    # 1. Models: frozen VAE; text encoder from the toy CLIP's text tower (or the pipeline continued); UNet
    vae = AutoencoderKL.from_pretrained(vae_dir).eval()
    clip_model, tokenizer = load_toy_clip(clip_dir)
    latent_size = cfg.image_size // 2 ** (len(vae.config.block_out_channels) - 1)
    if cfg.init_from is not None:
        from diffusers import UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        unet = UNet2DConditionModel.from_pretrained(Path(cfg.init_from) / "unet")
        logger.info("continuing the UNet of %s", cfg.init_from)
        if cfg.clip_text_encoder:
            text_encoder = text_encoder_from_clip(clip_model)  # with the toy CLIP's own tokenizer
            logger.info("text encoder: the toy CLIP's text tower and tokenizer")
        else:
            text_encoder = CLIPTextModel.from_pretrained(Path(cfg.init_from) / "text_encoder")
            if not cfg.fresh_text_encoder:
                # The continued text encoder reads token ids of the pipeline's own tokenizer, not the toy CLIP's
                # (their vocabularies hold the same words under different ids).
                tokenizer = CLIPTokenizer.from_pretrained(Path(cfg.init_from) / "tokenizer")
                logger.info("text encoder and tokenizer continued from %s", cfg.init_from)
    else:
        text_encoder = text_encoder_from_clip(clip_model)
        unet = build_unet(cfg.unet, latent_size, vae.config.latent_channels, text_encoder.config.hidden_size)
    if cfg.fresh_text_encoder:
        from transformers import CLIPTextModel

        text_encoder = CLIPTextModel(clip_model.config.text_config)
        logger.info("text encoder starts from random weights")
    text_encoder.requires_grad_(cfg.train_text_encoder).train(cfg.train_text_encoder)
    trained = [unet, text_encoder] if cfg.train_text_encoder else [unet]
    emas = [copy.deepcopy(m).eval().requires_grad_(False) for m in trained]
    logger.info("toy UNet: %.2f M parameters", sum(p.numel() for p in unet.parameters()) / 1e6)

    # 2. Data: rendered once, encoded to latent distributions once; captions drawn afresh at every use
    data = render_set(cfg.n_images, seed=cfg.seed + 200, size=cfg.image_size, progress=progress)
    pixels = images_to_tensor(data.images)
    means, stds = [], []
    with torch.no_grad():
        for i in tqdm(range(0, len(pixels), 500), desc="encode", disable=not progress):
            dist = vae.encode(pixels[i : i + 500]).latent_dist
            means.append(dist.mean)
            stds.append(dist.std)
    means, stds = torch.cat(means), torch.cat(stds)  # (n, c, h, w)
    scale = vae.config.scaling_factor

    # 3. Training loop
    scheduler = noise_scheduler()
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    groups = [{"params": list(unet.parameters()), "lr_scale": 1.0}]
    if cfg.train_text_encoder:
        groups.append({"params": list(text_encoder.parameters()), "lr_scale": cfg.text_encoder_lr_scale})
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=0.01)
    params = [p for g in groups for p in g["params"]]
    clock = TrainingClock(cfg.steps, cfg.max_minutes, cfg.warmup, cfg.lr)
    last_save = 0.0
    unet.train()
    bar = tqdm(range(cfg.steps), desc="toy UNet", disable=not progress)
    for step in bar:
        clock.set_lr(opt, step)
        idx = rng.choice(len(means), size=cfg.batch_size, replace=False)
        latents = (means[idx] + stds[idx] * torch.randn(means[idx].shape, generator=gen)) * scale  # (B, c, h, w)
        texts = [caption(data.aspects[i], rng)[0] if rng.random() >= cfg.caption_dropout else "" for i in idx]
        with torch.set_grad_enabled(cfg.train_text_encoder):
            cond = encode_prompts(text_encoder, tokenizer, texts)  # (B, L, d)
        noise = torch.randn(latents.shape, generator=gen)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (len(idx),), generator=gen)
        noisy = scheduler.add_noise(latents, noise, t)
        target = scheduler.get_velocity(latents, noise, t)
        pred = unet(noisy, t, encoder_hidden_states=cond).sample
        per_item = F.mse_loss(pred, target, reduction="none").mean(dim=(1, 2, 3))
        loss = (per_item * min_snr_weights(scheduler, t, cfg.min_snr_gamma)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            decay = min(cfg.ema_decay, (1 + step) / (10 + step))
            for model, ema in zip(trained, emas, strict=True):
                for p_ema, p in zip(ema.parameters(), model.parameters(), strict=True):
                    p_ema.lerp_(p, 1 - decay)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if step % 200 == 0:
            logger.info(
                "step %d loss %.4f lr %.2e (%.0f s)", step, loss.item(), opt.param_groups[0]["lr"], clock.elapsed()
            )
        finished = clock.done(step)
        if finished or clock.elapsed() - last_save > cfg.save_every_minutes * 60:
            last_save = clock.elapsed()
            with atomic_dir(out_dir) as tmp:
                ema_text_encoder = emas[1] if cfg.train_text_encoder else text_encoder.eval()
                make_pipeline(vae, ema_text_encoder, tokenizer, emas[0]).save_pretrained(tmp)
                write_train_record(tmp, train_record(cfg, step + 1, clock.elapsed(), continued_from))
            logger.info("saved pipeline at step %d to %s", step + 1, out_dir)
        if finished:
            break
    return emas[0]


def load_toy_pipeline(path: str | Path | None = None):
    """Load the toy text-to-image pipeline (default: the shipped ``data/toy_sd``); see ``finexl.loading``."""

    return load_pipeline(path)
